"""A table's comparisons: one cell minus another across columns, paired on the same test tasks, and the share of a
gap between two rows that a third closes, ours and the paper's."""
import numpy as np

from harness.protocols import Score
from harness.stats import describe, summarize
from harness.store import RunRecord, Store
from harness.tables import Comparison, PaperCell, TableSpec, build, markdown

TASKS = 40
STEPS = {"0 steps": 0, "1 step": 1, "3 steps": 3}
SPEC = TableSpec(
    "t", "t", "sinusoid", "return", {"5-shot": 5}, STEPS, {"M": "m", "P": "p", "O": "o"},
    paper=[PaperCell("5-shot", "M", "1 step", 7.0), PaperCell("5-shot", "P", "1 step", 4.0),
           PaperCell("5-shot", "O", "0 steps", 10.0)],
    comparisons=(Comparison("M", "1 step", "P", "3 steps"), Comparison("M", "1 step", "P", "1 step", ("O", "0 steps"))))


def store_of(tmp_path, learners: dict[str, float]) -> tuple[Store, dict[tuple[str, int], np.ndarray]]:
    """One done run per learner; task i at step k scores level + k + noise (its own noise per learner and step)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    store, values = Store(tmp_path), {}
    rng = np.random.default_rng(0)
    for learner, level in learners.items():
        run_id = f"sinusoid-{learner}-paper-s0"
        store.begin(RunRecord(run_id, "sinusoid", learner, "paper", 0, "cpu", {"x": 1}, {}, None, "test"))
        scores = []
        for step in STEPS.values():
            values[learner, step] = level + step + rng.normal(0, 1, TASKS)
            scores += [Score(i, 5, step, "return", float(v)) for i, v in enumerate(values[learner, step])]
        store.finish(run_id, scores)
    return store, values


def test_comparisons_pair_cells_across_columns_and_give_the_share_of_the_gap_closed(tmp_path):
    store, values = store_of(tmp_path, {"m": 10.0, "p": 4.0, "o": 20.0})
    frame = build(SPEC, store, False)
    versus, gap = frame.attrs["comparisons"]
    diff = summarize(values["m", 1] - values["p", 3], False)  # task by task: the same test tasks
    assert versus == ("- 5-shot: M after 1 step minus P after 3 steps, paired on the same test tasks: "
                      f"{describe(diff.mean, diff.ci95, diff.n, diff.diverged)}")
    m1, p1, o0 = values["m", 1].mean(), values["p", 1].mean(), values["o", 0].mean()
    assert f"closes {(m1 - p1) / (o0 - p1):.0%} of the gap between P after 1 step and O after 0 steps" in gap
    assert gap.endswith("the paper's values: 50%")  # (7 - 4) / (10 - 4)
    assert versus in markdown(SPEC, frame) and gap in markdown(SPEC, frame)


def test_a_comparison_without_its_runs_says_what_is_missing(tmp_path):
    store, _ = store_of(tmp_path / "no-oracle", {"m": 10.0, "p": 4.0})
    _, gap = build(SPEC, store, False).attrs["comparisons"]
    assert "paired on the same test tasks" in gap and gap.endswith("not yet (O after 0 steps has no finished run)")
    store, _ = store_of(tmp_path / "no-pretrain", {"m": 10.0})
    assert build(SPEC, store, False).attrs["comparisons"] == [
        "- 5-shot: M after 1 step against P after 3 steps: not yet (P after 3 steps has no finished run)",
        "- 5-shot: M after 1 step against P after 1 step: not yet (P after 1 step has no finished run)"]
    store, _ = store_of(tmp_path / "none", {"o": 20.0})
    frame = build(SPEC, store, False)
    assert frame.attrs["comparisons"] == [] and "Comparisons" not in markdown(SPEC, frame)


def test_tables_name_each_baseline_s_tuned_step_size_and_flag_one_at_the_edge_of_its_grid(tmp_path):
    store, _ = store_of(tmp_path, {"m": 10.0, "p": 4.0, "o": 20.0})
    grid = {"0.01": 1.0, "0.1": 2.0, "0.5": 3.0}
    store.record("sinusoid-p-paper-s0", "step_size_validation", {"5": grid, "10": grid})
    store.record("sinusoid-p-paper-s0", "tuned_step_sizes", {"5": 0.5, "10": 0.1})
    store.record("sinusoid-o-paper-s0", "step_size_validation", {"5": grid})
    store.record("sinusoid-o-paper-s0", "tuned_step_sizes", {"5": 0.1})
    frame = build(SPEC, store, False)
    cells = frame.set_index(["row", "column"]).step_size
    assert cells["P", "1 step"] == cells["P", "3 steps"] == "0.5 (the largest candidate)"
    assert cells["O", "1 step"] == "0.1"  # inside the grid: no mark
    assert cells.isna()["P", "0 steps"] and cells.isna()["O", "0 steps"] and cells.isna()["M", "1 step"]
    lines = {line.split(" ")[1]: line for line in markdown(SPEC, frame).splitlines() if line.startswith("- ")}
    assert "tuned step size 0.5 (the largest candidate)" in lines["p"]
    assert "tuned step size 0.1)" in lines["o"] and "step size" not in lines["m"]


def test_a_run_group_s_step_sizes_are_named_per_setting_where_they_differ():
    import pandas as pd

    from harness.tables import step_sizes

    cells = pd.DataFrame({"setting": ["5-shot", "5-shot", "10-shot", "10-shot"],
                          "step_size": [None, "0.01", None, "0.03 (the largest candidate)"]})
    assert step_sizes(cells) == ", tuned step sizes 5-shot: 0.01; 10-shot: 0.03 (the largest candidate)"
    assert step_sizes(cells.assign(step_size=[None, "0.01", None, "0.01"])) == ", tuned step size 0.01"
    assert step_sizes(cells.assign(step_size=None)) == ""
