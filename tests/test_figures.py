"""Figures: `report` draws every installed figure as a PNG; curves keep diverged steps out of the plot and say so;
Figure 2 marks a learner without a run instead of failing."""
import math

import matplotlib.image
import numpy as np
import pytest

from harness.cli import main
from harness.figures import CurvesFigure, curves, diverged_label
from harness.plugins import registry
from harness.protocols import Score
from harness.store import RunRecord, Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """A results store with smoke runs of maml and fomaml on the sinusoid (no pretrain run)."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "--suite", "sinusoid", "--learners", "maml,fomaml", "--profile", "smoke", "--out", str(out),
                 "--quiet"]) == 0
    return out


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 300
    assert image.std() > 0.05  # something is drawn


def test_report_writes_every_figure_as_png(smoke_runs, tmp_path, capsys):
    figures = tmp_path / "figures"
    assert main(["report", "--out", str(smoke_runs), "--results", str(tmp_path / "tables"),
                 "--figures", str(figures)]) == 0
    err = capsys.readouterr().err
    for name in ("figure2", "figure3"):
        assert_png(figures / f"{name}.png")
        assert f"wrote {figures / name}.png" in err


def test_figures_go_beside_the_tables_by_default(smoke_runs, tmp_path):
    assert main(["report", "--out", str(smoke_runs), "--results", str(tmp_path / "tables")]) == 0
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["figure2.png", "figure3.png"]


def test_figure2_marks_a_learner_without_a_run(smoke_runs):
    reg = registry()
    spec = reg.figures["figure2"].obj
    store = Store(smoke_runs)
    runs = store.runs()
    store.close()
    fig = spec.draw({"maml": runs[runs.learner == "maml"].iloc[0]}, reg, smoke_runs)
    panels = {ax.get_title().split(",")[0]: ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == {"maml", "pretrain"}
    pretrain = [ax for ax in fig.axes if ax.get_title().startswith("pretrain")]
    assert len(pretrain) == len(spec.shots)
    assert all([t.get_text() for t in ax.texts] == ["not run"] for ax in pretrain)
    maml = [ax for ax in fig.axes if ax.get_title().startswith("maml")]
    # ground truth plus one fit per step, each finite on the whole grid
    assert all(len(ax.lines) == 1 + len(spec.steps) for ax in maml)
    assert all(np.isfinite(line.get_ydata()).all() for ax in maml for line in ax.lines)


def synthetic_store(out, diverged_from):
    """Two learners on 3 tasks at 5 shots, steps 0..3; task 0 of "b" diverges (NaN) from step `diverged_from`."""
    store = Store(out)
    for learner in ("a", "b"):
        run_id = f"sinusoid-{learner}"
        store.begin(RunRecord(run_id, "sinusoid", learner, "smoke", 0, "cpu", {}, {}, None, "test"))
        store.finish(run_id, [Score(task, 5, step, "mse",
                                    math.nan if (learner, task) == ("b", 0) and step >= diverged_from
                                    else 1.0 / (step + 1) + task)
                              for task in range(3) for step in range(4)])
    return store


def test_curves_leave_out_diverged_steps_and_name_them(tmp_path):
    store = synthetic_store(tmp_path, diverged_from=2)
    frame = curves(store, "sinusoid", "mse", True)
    b = frame[frame.learner == "b"].set_index("step")["mean"]
    assert math.isfinite(b[1]) and b[2] == b[3] == math.inf
    spec = CurvesFigure("curves", "test curves", "sinusoid", "mse")
    fig = spec.draw(frame, True)
    (ax,) = fig.axes
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0] == "a" and labels[1].startswith("b (diverged at steps ≥ 2, K = ")
    assert list(ax.lines[1].get_xdata()) == [0, 1]
    assert_png(spec.make(store, tmp_path, registry(), tmp_path / "figures", None))
    store.close()


def test_diverged_label_names_the_steps():
    assert diverged_label("maml", [], 10) == "maml"
    assert diverged_label("fomaml", [9, 10], 10) == "fomaml (diverged at steps ≥ 9)"
    assert diverged_label("fomaml", [10], 10) == "fomaml (diverged at step 10)"
    assert diverged_label("fomaml", [3, 5], 10) == "fomaml (diverged at steps 3, 5)"


def test_report_without_runs_writes_no_figure(tmp_path, capsys):
    Store(tmp_path).close()
    figures = tmp_path / "figures"
    assert main(["report", "--out", str(tmp_path), "--results", str(tmp_path / "tables"),
                 "--figures", str(figures)]) == 0
    assert not figures.exists()  # nothing to draw: not even the folder is made
    assert "figure3: no runs of sinusoid it can draw; not written" in capsys.readouterr().err


def test_list_shows_figures_with_their_plugin(capsys):
    assert main(["list"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| figure")]
    assert {row.split("|")[2].strip() for row in rows} >= {"figure2", "figure3"}
    assert all("maml-harness" in row for row in rows)


def test_training_curves_come_from_finished_runs_details_and_unfinished_runs_checkpoints(tmp_path):
    import torch

    from harness import checkpoints
    from plugins.rl.training_figure import TrainingCurvesFigure, training_curves

    store = Store(tmp_path)
    config = {"meta_iterations": 500, "variant": "rllab"}
    for learner, profile in (("maml", "paper"), ("maml", "quick"), ("pretrain", "paper"), ("oracle", "paper")):
        store.begin(RunRecord(f"ant-{learner}-{profile}", "ant-velocity", learner, profile, 0, "cpu", config, {}, None,
                              "test"))
    store.record("ant-maml-paper", "training_curve", {"iteration": [0, 1, 2], "return": [1.0, None, 3.0]})
    store.finish("ant-maml-paper", [Score(0, 20, 0, "return", 1.0)])
    store.record("ant-maml-quick", "training_curve", {"iteration": [0], "return": [9.0]})
    store.finish("ant-maml-quick", [Score(0, 20, 0, "return", 1.0)])  # a less thorough profile: not drawn
    (tmp_path / "ant-pretrain-paper").mkdir()  # running in this process, checkpointed after 2 iterations
    torch.save({"iteration": 1, "curve": {"iteration": [0, 1], "return": [-5.0, -4.0]}},
               tmp_path / "ant-pretrain-paper" / checkpoints.TRAIN)
    curves = training_curves(store, tmp_path, "ant-velocity", where={"variant": "rllab"})
    assert sorted(curves) == ["maml", "pretrain"]  # the oracle has no checkpoint yet
    label, returns = curves["maml"]
    assert label == "maml (paper, done, 3/500)" and np.isnan(returns[1]) and list(returns[[0, 2]]) == [1.0, 3.0]
    assert curves["pretrain"][0] == "pretrain (paper, running, 2/500)"
    assert list(curves["pretrain"][1]) == [-5.0, -4.0]
    assert training_curves(store, tmp_path, "ant-velocity", where={"variant": "gymnasium"}) == {}
    figure = TrainingCurvesFigure("training-ant-velocity", "t", "ant-velocity")
    assert_png(figure.make(store, tmp_path, registry(), tmp_path / "figures", None))
    nothing = TrainingCurvesFigure("x", "t", "ant-direction")
    assert nothing.make(store, tmp_path, registry(), tmp_path / "f", None) is None
