"""The command line: smoke runs of every learner x suite, rerun and resume, reports, and bad input."""
import json
import platform
import re
import sqlite3
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from test_data_faults import BAD_DATA
from test_store_faults import BAD_STORE

from harness import checkpoints, runner
from harness.cli import main
from harness.errors import UsageError
from harness.plugins import registry
from harness.store import Store

REG = registry()
IMAGES = ("omniglot", "miniimagenet")  # on the real data, every setting: test_omniglot.py, test_miniimagenet.py
PAIRS = [(s, name) for s in sorted(REG.suites) if REG.suites[s].obj.kind == "supervised" and s not in IMAGES
         for name in sorted(REG.learners) if REG.learners[name].obj.applies_to(REG.suites[s].obj)]
# RL suites: test_navigation2d.py


def scores(out):
    db = sqlite3.connect(out / "results.sqlite")
    return db.execute("SELECT run_id, task, shots, step, value FROM scores ORDER BY 1, 2, 3, 4").fetchall()


@pytest.mark.parametrize("suite,learner", PAIRS)
def test_smoke_run_of_every_learner_and_suite(tmp_path, capsys, suite, learner):
    out = tmp_path / "out"
    assert main(["run", "--suite", suite, "--learners", learner, "--profile", "smoke", "--out", str(out)]) == 0
    profile = REG.suites[suite].obj.profiles["smoke"]
    expected = profile["eval_tasks"] * len(profile["eval_shots"]) * (profile["eval_steps"] + 1)
    assert len(scores(out)) == expected
    assert learner in capsys.readouterr().out  # the summary table
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    state = torch.load(run_dir / "model.pt", weights_only=True)  # plain tensors, loadable without the harness
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    assert json.loads((run_dir / "config.json").read_text())["learner"] == learner


def test_rerun_skips_finished_runs(tmp_path, capsys):
    args = ["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--out", str(tmp_path)]
    assert main(args) == 0
    before = scores(tmp_path)
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().err
    assert scores(tmp_path) == before



def test_rerun_flag_recomputes_a_finished_run_and_replaces_its_scores(tmp_path, capsys, monkeypatch):
    args = ["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--out", str(tmp_path)]
    assert main(args) == 0
    before = scores(tmp_path)
    monkeypatch.setattr("plugins.sinusoid.Sinusoid.amplitude", (5.0, 5.0))  # a "code change" that alters results
    assert main(args) == 0 and "skipped" in capsys.readouterr().err
    assert scores(tmp_path) == before
    assert main([*args, "--rerun"]) == 0
    after = scores(tmp_path)
    assert len(after) == len(before) and after != before
    assert [r[:4] for r in after] == [r[:4] for r in before]  # the same cells, replaced, none duplicated


def test_rerun_flag_starts_an_interrupted_run_from_scratch_instead_of_its_checkpoint(tmp_path):
    args = ["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--out", str(tmp_path)]
    assert main(args) == 0
    before = scores(tmp_path)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (run_dir / "model.pt").unlink()  # as if interrupted during training, with a checkpoint of other code
    torch.save({"iteration": 1, "not": "this code's checkpoint"}, run_dir / "train-checkpoint.pt")
    db = sqlite3.connect(tmp_path / "results.sqlite")
    with db:
        db.execute("UPDATE runs SET status = 'running'")
    assert main(args) != 0  # resuming loads the checkpoint
    assert main([*args, "--rerun"]) == 0
    assert scores(tmp_path) == before


CUT = ["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke",
       "--set", "meta_iterations=30", "--set", "checkpoint_every=10"]
"""A 30-iteration run with checkpoints every 10, for the interruption tests."""


def run_interrupted_at_17(out, monkeypatch, args=CUT) -> None:
    """Run `args` into `out`, stopped by a KeyboardInterrupt at iteration 17 (`CUT`'s last checkpoint: iteration
    9)."""
    log = runner.RunContext.log
    def interrupt(self, iteration, loss):
        if iteration == 17:
            raise KeyboardInterrupt
        log(self, iteration, loss)
    with monkeypatch.context() as patch:
        patch.setattr(runner.RunContext, "log", interrupt)
        assert main([*args, "--out", str(out)]) == 130


def test_interrupted_run_resumes_from_checkpoint_to_identical_results(tmp_path, monkeypatch):
    args = CUT
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    run_interrupted_at_17(tmp_path / "cut", monkeypatch)
    (run_dir,) = [p for p in (tmp_path / "cut").iterdir() if p.is_dir()]
    checkpoint = torch.load(run_dir / "train-checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == 9 and checkpoint["harness_train_seconds"] > 0
    seen = []
    monkeypatch.setattr(runner.RunContext, "iterations",
                        lambda self, start, total, desc="": (seen.append(start), iter(range(start, total)))[1])
    assert main([*args, "--out", str(tmp_path / "cut")]) == 0
    assert seen == [10]
    assert scores(tmp_path / "whole") == scores(tmp_path / "cut")
    db = sqlite3.connect(tmp_path / "cut" / "results.sqlite")
    (status, seconds), = db.execute("SELECT status, train_seconds FROM runs")
    assert status == "done" and seconds >= checkpoint["harness_train_seconds"]
    first, second = Store(tmp_path / "cut").details(run_dir.name)["segments"]
    assert (first["resumed_after"], second["resumed_after"]) == (None, 9)
    assert first["host"] == second["host"] == platform.node() and second["torch"] == torch.__version__
    assert first["device"] == second["device"] == "cpu"
    (whole_run,) = [p.name for p in (tmp_path / "whole").iterdir() if p.is_dir()]
    curve = Store(tmp_path / "cut").details(run_dir.name)["training_loss"]  # kept across the interruption
    assert curve == Store(tmp_path / "whole").details(whole_run)["training_loss"] and len(curve["mean"]) == 1
    assert first["seconds"] == pytest.approx(checkpoint["harness_train_seconds"], abs=0.1)
    assert first["seconds"] + second["seconds"] == pytest.approx(seconds, abs=0.2)


def test_the_training_loss_is_recorded_as_block_means(tmp_path, monkeypatch):
    logged = []
    log = runner.RunContext.log
    monkeypatch.setattr(runner.RunContext, "log", lambda self, it, loss: (logged.append(loss), log(self, it, loss)))
    monkeypatch.setattr("harness.training.CURVE_EVERY", 20)
    assert main([*CUT, "--out", str(tmp_path)]) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    curve = Store(tmp_path).details(run_dir.name)["training_loss"]
    assert curve["every"] == 20 and len(logged) == 30
    assert curve["mean"] == pytest.approx([sum(logged[:20]) / 20, sum(logged[20:]) / 10])


def test_checkpoint_seconds_checkpoints_off_the_iteration_schedule_and_resumes_to_identical_results(tmp_path,
                                                                                                 monkeypatch):
    every_iteration = [*CUT, "--set", "checkpoint_every=1000", "--set", "checkpoint_seconds=0"]
    assert main([*CUT, "--out", str(tmp_path / "whole")]) == 0
    run_interrupted_at_17(tmp_path / "cut", monkeypatch, every_iteration)
    (run_dir,) = [p for p in (tmp_path / "cut").iterdir() if p.is_dir()]
    assert torch.load(run_dir / "train-checkpoint.pt", weights_only=True)["iteration"] == 16
    assert main([*every_iteration, "--out", str(tmp_path / "cut")]) == 0
    assert scores(tmp_path / "whole") == scores(tmp_path / "cut")


def test_a_checkpoint_from_before_segments_were_kept_counts_as_one_unrecorded_segment(tmp_path, monkeypatch):
    run_interrupted_at_17(tmp_path, monkeypatch)
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    checkpoint = torch.load(run_dir / "train-checkpoint.pt", weights_only=True)
    del checkpoint["harness_segments"]
    torch.save(checkpoint, run_dir / "train-checkpoint.pt")
    assert main([*CUT, "--out", str(tmp_path)]) == 0
    earlier, this = Store(tmp_path).details(run_dir.name)["segments"]
    assert earlier == {"host": None, "seconds": round(checkpoint["harness_train_seconds"], 1)}
    assert this["host"] == platform.node() and this["resumed_after"] == 9


@pytest.mark.parametrize("older_checkpoint", [False, True])
def test_status_and_tables_show_how_far_an_unfinished_run_trained(tmp_path, monkeypatch, capsys, older_checkpoint):
    run_interrupted_at_17(tmp_path, monkeypatch)  # last checkpoint: iteration 9 of 30, so 10 done
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with sqlite3.connect(tmp_path / "results.sqlite") as db:  # the interrupted command's process has exited
        db.execute("UPDATE runs SET pid = ?", (int(dead.stdout),))
    if older_checkpoint:  # written before the runner recorded its progress: counted from `iteration`
        (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
        checkpoint = torch.load(run_dir / "train-checkpoint.pt", weights_only=True)
        del checkpoint["harness_progress"]
        torch.save(checkpoint, run_dir / "train-checkpoint.pt")
    capsys.readouterr()
    assert main(["status", "--out", str(tmp_path)]) == 0
    assert "interrupted" in (out := capsys.readouterr().out) and "last checkpoint: meta-train 10/30" in out
    # the pace of the process that trained it, from the checkpoint's last segment, and the time the rest would take
    host = re.escape(platform.node())
    assert re.search(rf"meta-train 10/30, [0-9.e+-]+ s per iteration on {host}, about \d+ s to go", out)
    assert main(["report", "--out", str(tmp_path), "--results", str(tmp_path / "tables"), "--tables", "table2"]) == 0
    md = (tmp_path / "tables" / "table2.md").read_text()
    assert "| interrupted: meta-train 10/30 (0.67) |" in md.replace("  ", "")  # MAML 5-shot, 1 step
    assert "not run (2.41)" in md  # pretrain: no run at all
    import pandas as pd
    table = pd.read_csv(tmp_path / "tables" / "table2.csv")
    assert set(table[table.row == "MAML"].unfinished) == {"interrupted: meta-train 10/30"}


def test_status_lists_checkpoints_the_store_has_no_record_of_with_the_command_that_resumes_them_and_tables_show_them(
        tmp_path, monkeypatch, capsys):
    run_interrupted_at_17(tmp_path, monkeypatch)  # made with --set values: its id tells no command
    (cut,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    with sqlite3.connect(tmp_path / "results.sqlite") as db:  # as if brought from another machine
        db.execute("DELETE FROM sweeps")
        db.execute("DELETE FROM runs")
    plain = runner.prepare(runner.RunSpec("sinusoid", "maml", "smoke", seed=3), REG)  # the defaults' id
    (tmp_path / plain.run_id).mkdir()
    checkpoint = torch.load(cut / "train-checkpoint.pt", weights_only=True)
    del checkpoint["harness_progress"]  # written before the runner kept it: counted against meta_iterations
    torch.save(checkpoint, tmp_path / plain.run_id / "train-checkpoint.pt")
    capsys.readouterr()
    assert main(["status", "--out", str(tmp_path)]) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert "meta-train 10/30" in rows[cut.name] and "the command that made it, with its --set values" in rows[cut.name]
    smoke = plain.config["meta_iterations"]
    assert f"meta-train 10/{smoke}" in rows[plain.run_id]
    assert (f"`python -m harness run --suite sinusoid --learners maml --profile smoke --seeds 3 --out {tmp_path}`"
            in rows[plain.run_id])
    assert runner.identify(plain.run_id, REG) == (plain.spec, plain.config)
    assert main(["report", "--out", str(tmp_path), "--results", str(tmp_path / "tables"), "--tables", "table2"]) == 0
    md = (tmp_path / "tables" / "table2.md").read_text()
    assert f"| checkpoint, not resumed yet: meta-train 10/{smoke} (0.67) |" in md.replace("  ", "")  # MAML
    assert "not run (2.41)" in md  # pretrain: no checkpoint at all


def test_resume_from_continues_another_devices_checkpoint_to_the_same_scores(tmp_path, monkeypatch, capsys):
    args = CUT
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "cut"
    run_interrupted_at_17(out, monkeypatch)
    # make the interrupted run look like one on a GPU: its id and device are those `--device cuda` gives
    (cpu_dir,) = [p for p in out.iterdir() if p.is_dir()]
    prepared = runner.prepare(runner.RunSpec("sinusoid", "maml", "smoke", overrides={
        "meta_iterations": "30", "checkpoint_every": "10"}), REG)
    assert prepared.run_id == cpu_dir.name
    gpu_id = runner.run_id(replace(prepared.spec, device="cuda"), prepared.config)
    cpu_dir.rename(out / gpu_id)
    db = sqlite3.connect(out / "results.sqlite")
    with db:
        db.execute("UPDATE runs SET run_id = ?, device = 'cuda'", (gpu_id,))
        db.execute("UPDATE sweeps SET run_id = ?", (gpu_id,))
    checkpoint = (out / gpu_id / "train-checkpoint.pt").read_bytes()

    for bad, problem in [(["--resume-from", "nonexistent"], "no run nonexistent"),
                         (["--resume-from", gpu_id, "--set", "inner_lr=0.02"], "differs from this one in inner_lr"),
                         (["--resume-from", gpu_id, "--seeds", "0,1"], "continues one run")]:
        assert main([*args, "--out", str(out), *bad]) == 2
        assert problem in capsys.readouterr().err
    assert not cpu_dir.exists()  # nothing written by the refused commands
    assert main([*args, "--out", str(tmp_path / "new"), "--resume-from", gpu_id]) == 2
    assert "holds no results store" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()

    seen = []
    monkeypatch.setattr(runner.RunContext, "iterations",
                        lambda self, start, total, desc="": (seen.append(start), iter(range(start, total)))[1])
    assert main([*args, "--out", str(out), "--resume-from", gpu_id]) == 0
    assert seen == [10]
    assert (out / gpu_id / "train-checkpoint.pt").read_bytes() == checkpoint  # the source stays as it was
    continued = [row for row in scores(out) if row[0] == cpu_dir.name]
    assert [row[1:] for row in continued] == [row[1:] for row in scores(tmp_path / "whole")]
    store = Store(out)
    assert store.runs().set_index("run_id").device[cpu_dir.name] == "cuda→cpu"
    assert store.details(cpu_dir.name)["continued_from"]["run_id"] == gpu_id
    assert main([*args, "--out", str(out), "--resume-from", gpu_id]) == 0  # done: skipped, not continued again
    assert "skipped" in capsys.readouterr().err


def test_diverging_run_is_marked_failed(tmp_path, capsys):
    code = main(["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--out", str(tmp_path),
                 "--set", "inner_lr=1e30"])
    assert code == 1
    db = sqlite3.connect(tmp_path / "results.sqlite")
    (status, error), = db.execute("SELECT status, error FROM runs")
    assert status == "failed" and "iteration 0" in error
    assert db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 0
    assert "failed" in capsys.readouterr().err


def test_report_writes_table2_with_paper_values_and_marked_missing_cells(tmp_path, capsys):
    assert main(["run", "--suite", "sinusoid", "--learners", "maml,fomaml", "--profile", "smoke",
                 "--out", str(tmp_path / "runs")]) == 0
    assert main(["report", "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "tables")]) == 0
    import pandas as pd
    table = pd.read_csv(tmp_path / "tables" / "table2.csv")
    maml = table[(table.row == "MAML") & (table.setting == "5-shot") & (table.column == "1 step")].iloc[0]
    assert maml.paper == 0.67 and maml.n == 20 and maml.profile == "smoke" and "--learners maml,fomaml" in maml.command
    pretrain = table[table.row == "pretrain on all tasks"]
    assert pretrain["mean"].isna().all()
    assert pretrain[(pretrain.setting == "5-shot") & (pretrain.column != "0 steps")].paper.notna().all()
    assert set(table.row) >= {"MAML", "fomaml", "multi-task no reg"}
    assert set(table.setting) == {"5-shot", "10-shot", "20-shot"}
    md = (tmp_path / "tables" / "table2.md").read_text()
    assert "not run (2.41)" in md and "python -m harness run" in md


def test_tasks_lists_the_worst_test_tasks_with_their_parameters(tmp_path, capsys):
    assert main(["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["tasks", "--suite", "sinusoid", "--learner", "maml", "--shots", "5", "--step", "2",
                 "--worst", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "amplitude" in out and "over_10x_median" in out
    assert len([row for row in out.splitlines() if row.startswith("|")]) == 2 + 3
    assert main(["tasks", "--suite", "sinusoid", "--learner", "fomaml", "--shots", "5", "--step", "2",
                 "--out", str(tmp_path)]) == 2


def truncated_reference(tmp):
    """A regression reference cut off in the middle of a line."""
    (tmp / "ref").mkdir()
    (tmp / "ref" / "sinusoid-smoke.csv").write_text("learner,metric,shots,step,task,value\nmaml,mse,5,1,0,0.4")


def corrupt_archives(tmp):
    """Omniglot's two archives, neither of them a zip."""
    (tmp / "raw" / "omniglot" / "omniglot-py").mkdir(parents=True)
    for name in ("images_background.zip", "images_evaluation.zip"):
        (tmp / "raw" / "omniglot" / "omniglot-py" / name).write_bytes(b"PK\x03\x04 not really a zip" * 50)


def a_file(tmp):
    (tmp / "file").write_text("")


def smoke_store_and_a_file(tmp):
    """A store with one smoke run of MAML on the sinusoid, and a file beside it."""
    assert main(["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--quiet",
                 "--out", str(tmp / "runs")]) == 0
    a_file(tmp)


RUN = ["run", "--suite", "sinusoid", "--learners", "maml"]
BAD = [  # (argv with {tmp} for the test's folder, files made first, what the one-line error must say)
    (["run", "--suite", "sinusoid", "--learners", "mam"], None, "unknown learner 'mam'"),
    (["run", "--suite", "sinus", "--learners", "maml"], None, "unknown suite 'sinus'"),
    ([*RUN, "--profile", "huge"], None, "unknown profile 'huge'"),
    ([*RUN, "--set", "meta_iter=5"], None, "unknown key"),
    (["data", "prepare", "miniimagenet", "--download", "--data-dir", "{tmp}/raw"], None,
     "dataset miniimagenet cannot be downloaded; put its archives in"),
    (["data", "prepare", "omniglot", "--download", "--data-dir", "{tmp}/file/raw"], a_file,
     "cannot write into {tmp}/file/raw/omniglot/omniglot-py (Not a directory); give a writable --data-dir"),
    ([*RUN, "--set", "pretrain.meta_lr=0.1"], None, "learner pretrain is not in this command's --learners"),
    ([*RUN, "--set", "maml.context_size=2"], None, "--set maml.context_size: unknown key for learner maml"),
    ([*RUN, "--set", "maml.inner_lr=0"], None, "inner_lr takes finite float > 0"),
    ([*RUN, "--set", "meta_iterations"], None, "not KEY=VALUE"),
    ([*RUN, "--set", "meta_iterations=ten"], None, "takes int"),
    ([*RUN, "--set", "first_order=maybe"], None, "takes bool"),
    ([*RUN, "--set", "eval_shots=5,x"], None, "comma-separated list"),
    ([*RUN, "--set", "meta_batch=0"], None, "meta_batch=0 is out of range"),
    ([*RUN, "--set", "inner_steps=-2"], None, "inner_steps=-2 is out of range"),
    ([*RUN, "--set", "eval_steps=-1"], None, "eval_steps takes int in [0, "),
    ([*RUN, "--set", "inner_lr=nan"], None, "inner_lr=nan is not finite"),
    ([*RUN, "--set", "inner_lr=inf"], None, "inner_lr=inf is not finite"),
    ([*RUN, "--set", "meta_lr=1e999"], None, "meta_lr=inf is not finite"),
    ([*RUN, "--set", "inner_lr=0"], None, "inner_lr takes finite float > 0"),
    ([*RUN, "--set", "eval_shots=5,5"], None, "eval_shots=[5, 5] repeats an entry"),
    ([*RUN, "--set", "eval_shots=20,5"], None, "eval_shots=[20, 5] is not in ascending order"),
    ([*RUN, "--set", "eval_shots=0,5"], None, "eval_shots=[0, 5] is out of range"),
    ([*RUN, "--set", "meta_batch=99999999999999999999"], None, "meta_batch takes int in [1, 2147483647]"),
    ([*RUN, "--set", "meta_iterations=9223372036854775808"], None, "meta_iterations=9223372036854775808 is out"),
    ([*RUN, "--set", "threads=0"], None, "threads takes int in [1, 1024]"),
    ([*RUN, "--set", "checkpoint_every=0"], None, "checkpoint_every=0 is out of range"),
    ([*RUN, "--set", "compile=maybe"], None, "compile takes bool"),
    ([*RUN, "--set", "meta_batch=true"], None, "meta_batch takes int"),
    (["run", "--suite", "sinusoid", "--learners", "context", "--set", "context_size=0"], None,
     "context_size=0 is out of range"),
    (["run", "--suite", "sinusoid", "--learners", "multitask-l2", "--set", "multitask_lr=nan"], None,
     "multitask_lr=nan is not finite"),
    (["run", "--suite", "navigation2d", "--learners", "maml", "--set", "gamma=1.5"], None,
     "gamma takes finite float in (0, 1]"),
    (["run", "--suite", "navigation2d", "--learners", "maml", "--set", "cg_subsample=0"], None,
     "cg_subsample=0.0 is out of range"),
    (["run", "--suite", "cheetah-velocity", "--learners", "maml", "--set", "variant=mujoco"], None,
     "variant takes one of gymnasium, rllab"),
    (["run", "--suite", "omniglot", "--learners", "maml", "--set", "ways=1"], None, "ways takes int in [2, 100]"),
    ([*RUN, "--set", "vectorize=fast"], None, "vectorize"),
    (["run", "--suite", "navigation2d", "--learners", "maml", "--set", "finish_begun=maybe"], None,
     "finish_begun takes bool"),
    ([*RUN, "--seeds", "0,a"], None, "--seeds"),
    ([*RUN, "--seeds", "-1"], None, "non-negative"),
    ([*RUN, "--seeds", "1,1"], None, "distinct"),
    (["run", "--suite", "sinusoid", "--learners", ","], None, "--learners is empty"),
    (["run", "--suite", "sinusoid", "--learners", "maml,maml"], None, "names maml more than once"),
    ([*RUN, "--device", "tpu"], None, "unknown device"),
    (["run", "--learners", "maml"], None, "--suite"),
    ([*RUN, "--jobs", "0"], None, "--jobs 0"),
    ([*RUN, "--jobs", "two"], None, "invalid int value"),
    ([*RUN, "--executor", "threads"], None, "unknown executor 'threads'"),
    ([*RUN, "--address", "10.0.0.1:6379"], None, "--address names a Ray cluster"),
    (["run", "--suite", "omniglot", "--learners", "oracle"], None, "does not apply to suite omniglot"),
    (["run", "--suite", "omniglot", "--learners", "maml", "--setting", "7way-1shot"], None,
     "unknown setting '7way-1shot'"),
    ([*RUN, "--setting", "5way-1shot"], None, "has no settings"),
    (["run", "--suite", "omniglot", "--learners", "maml", "--set", "model=resnet"], None, "model='resnet'"),
    (["run", "--suite", "omniglot", "--learners", "maml", "--set", "model=resnet"], None, "--set model=VALUE"),
    ([*RUN, "--profile", "smoke", "--out", "{tmp}/file"], a_file, "is a file, not a directory"),
    ([*RUN, "--profile", "smoke", "--out", "{tmp}/file/runs"], a_file, "cannot be created"),
    (["report", "--tables", "table99"], None, "no results store"),
    (["report", "--profile", "huge"], None, "unknown profile 'huge'"),
    (["status", "--out", "{tmp}/nowhere"], None, "no results store"),
    (["check", "--suite", "sinusoid", "--profile", "smoke", "--reference", "{tmp}/ref"], truncated_reference,
     "does not end with a newline: truncated?"),
    (["check", "--suite", "sinusoid", "--profile", "smoke", "--learners", "context", "--reference", "{tmp}/new",
      "--update", "--out", "{tmp}/file"], a_file, "--out {tmp}/file is a file"),  # creates no {tmp}/new first
    (["data", "prepare", "omniglot", "--data-dir", "{tmp}/missing", "--cache", "{tmp}/cache"], None,
     "does not exist"),
    (["data", "prepare", "omniglot", "--data-dir", "{tmp}/raw", "--cache", "{tmp}/cache"], corrupt_archives,
     "not a readable zip archive"),
    (["data", "prepare", "mnist"], None, "unknown dataset 'mnist'"),
    (["fly"], None, "invalid choice"),
    # issue 41: empty paths, negative counts, an output that is a file found before anything is written
    ([*RUN, "--profile", "smoke", "--out", ""], None, "argument --out: is empty"),
    (["status", "--out", " "], None, "argument --out: is empty"),
    (["tasks", "--suite", "sinusoid", "--learner", "maml", "--shots", "5", "--step", "1", "--worst", "-3"], None,
     "--worst: -3 is below 1"),
    (["tasks", "--suite", "sinusoid", "--learner", "maml", "--shots", "0", "--step", "1"], None,
     "--shots: 0 is below 1"),
    (["tasks", "--suite", "sinusoid", "--learner", "maml", "--shots", "5", "--step", "-1"], None,
     "--step: -1 is below 0"),
    ([*RUN, "--seeds", str(2**63)], None, "up to 2**63 - 1"),
    (["report", "--out", "{tmp}/runs", "--figures", "{tmp}/file"], smoke_store_and_a_file,
     "--figures {tmp}/file is a file"),
    (["report", "--out", "{tmp}/runs", "--results", "{tmp}/file"], smoke_store_and_a_file,
     "--results {tmp}/file is a file"),
    (["report", "--out", "{tmp}/runs", "--results", "{tmp}/file/tables"], smoke_store_and_a_file,
     "cannot be created ({tmp}/file is a file)"),
]


BAD += BAD_DATA + BAD_STORE  # the cases of data preparation and of the results store, with their setups there


def tree(root):
    return sorted((str(p.relative_to(root)), p.is_file() and p.read_bytes()) for p in root.rglob("*"))


@pytest.mark.parametrize("argv,setup,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, argv, setup, message):
    monkeypatch.chdir(tmp_path)
    if setup:
        setup(tmp_path)
    capsys.readouterr()
    before = tree(tmp_path)
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message.replace("{tmp}", str(tmp_path)) in err, err
    assert tree(tmp_path) == before


def test_corrupt_results_store_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "results.sqlite").write_bytes(b"not a database at all" * 100)
    assert main(["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--out", str(tmp_path)]) == 2
    assert "is not a results store" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"]


def test_output_path_that_is_a_file_is_rejected(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke",
                 "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_status_of_a_run_whose_training_is_done_says_its_evaluation_is_left(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoints.save_tensors(run_dir / checkpoints.TRAIN, {
        "iteration": 29, checkpoints.PROGRESS: {"done": 30, "of": 30, "unit": "meta-train"},
        checkpoints.SEGMENTS: [{"host": "vm", "seconds": 60.0, "resumed_after": 19}]})
    assert checkpoints.training_progress(run_dir, {}, pace=True) == (
        "meta-train 30/30, 6 s per iteration on vm, training done, evaluation left")
    assert checkpoints.training_progress(run_dir, {}) == "meta-train 30/30"


def test_set_reaches_every_unit_with_the_key_and_learner_key_one_learner():
    """--set KEY goes to the units whose config has KEY (first_order: maml and context, not pretrain), --set
    LEARNER.KEY to that learner's units only, and wins over KEY there."""
    spec = lambda learner: runner.RunSpec("sinusoid", learner, "smoke", overrides={
        "first_order": "true", "inner_lr": "0.5", "context.inner_lr": "0.25", "context.context_size": "3"})
    units = {r.spec.learner: r for r in runner.plan([spec(name) for name in ("maml", "context", "pretrain")], REG)}
    assert units["maml"].config["first_order"] is True and units["context"].config["first_order"] is True
    assert "first_order" not in units["pretrain"].config
    assert units["maml"].config["inner_lr"] == 0.5 and units["pretrain"].config["inner_lr"] == 0.5
    assert units["context"].config["inner_lr"] == 0.25 and units["context"].config["context_size"] == 3
    assert dict(units["pretrain"].spec.overrides) == {"inner_lr": "0.5"}
    alone = runner.plan([runner.RunSpec("sinusoid", "pretrain", "smoke")], REG)[0]
    inner_lr = runner.plan([runner.RunSpec("sinusoid", "pretrain", "smoke", overrides={"inner_lr": "0.5"})], REG)[0]
    assert units["pretrain"].run_id == inner_lr.run_id != alone.run_id  # the run of what reached it, nothing else
    with pytest.raises(UsageError, match="--set first_order: unknown key, in no unit of this command"):
        runner.plan([runner.RunSpec("sinusoid", "pretrain", "smoke", overrides={"first_order": "true"})], REG)
