"""`report` and provenance: the committed tables regenerate from the committed store byte for byte, a report never
silently turns a cell that has a value into "not run", a cell from uncommitted code is marked, paper-profile runs
refuse a dirty tree, and summaries take the metric's direction from the suite."""
import filecmp
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from harness import runner
from harness.cli import main, summary
from harness.plugins import registry
from harness.protocols import Score
from harness.store import RunRecord, Store
from harness.tables import TableSpec, build, markdown

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "results"
SMOKE = ["run", "--suite", "sinusoid", "--learners", "maml", "--profile", "smoke", "--quiet"]


def committed_files(folder: str) -> list[str]:
    """The files of results/<folder> as git has them (what a fresh clone holds)."""
    listed = subprocess.run(["git", "ls-files", f"results/{folder}"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    return sorted(Path(path).name for path in listed)


def test_report_of_the_committed_store_regenerates_the_committed_tables_and_figures_byte_for_byte(tmp_path, capsys):
    """The CI diff test: `report` over results/store, written elsewhere, equals results/tables and results/figures."""
    store = tmp_path / "store"
    shutil.copytree(COMMITTED / "store", store)  # report reads it only, but a copy keeps the committed one safe
    assert main(["report", "--out", str(store), "--results", str(tmp_path / "tables"),
                 "--figures", str(tmp_path / "figures")]) == 0
    for folder in ("tables", "figures"):
        names = committed_files(folder)
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == names, folder
        match, mismatch, errors = filecmp.cmpfiles(tmp_path / folder, COMMITTED / folder, names, shallow=False)
        assert not mismatch and not errors, f"results/{folder} differs from `report`'s output: {mismatch + errors}"


def test_report_defaults_pair_the_committed_store_with_the_committed_tables(tmp_path, monkeypatch, capsys):
    """`report` with no flags reads results/store and writes results/tables and results/figures; another store's
    tables go inside it."""
    monkeypatch.chdir(tmp_path)
    assert main([*SMOKE, "--out", "results/store"]) == 0
    assert main(["report", "--tables", "table2"]) == 0
    assert (tmp_path / "results" / "tables" / "table2.csv").is_file()
    assert (tmp_path / "results" / "figures" / "figure3.png").is_file()
    assert main([*SMOKE, "--out", "mine"]) == 0
    assert main(["report", "--tables", "table2", "--out", "mine"]) == 0
    assert (tmp_path / "mine" / "tables" / "table2.md").is_file() and (tmp_path / "mine" / "figures").is_dir()


def test_report_refuses_to_replace_cells_that_have_values_with_not_run_and_writes_nothing(tmp_path, capsys):
    full, part, tables = tmp_path / "full", tmp_path / "part", tmp_path / "tables"
    assert main([*SMOKE, "--learners", "maml,fomaml", "--out", str(full)]) == 0
    assert main([*SMOKE, "--out", str(part)]) == 0
    assert main(["report", "--tables", "table2", "--out", str(full), "--results", str(tables)]) == 0
    before = {p.name: p.read_bytes() for p in tables.iterdir()}
    capsys.readouterr()
    assert main(["report", "--tables", "table2", "--out", str(part), "--results", str(tables),
                 "--figures", str(tmp_path / "other-figures")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"would replace \d+ cell\(s\) that have values with .not run. in", err)
    assert "in table2 under" in err and "/ fomaml /" in err and "--allow-drop" in err
    assert {p.name: p.read_bytes() for p in tables.iterdir()} == before
    assert not (tmp_path / "other-figures").exists()
    assert main(["report", "--tables", "table2", "--out", str(part), "--results", str(tables), "--allow-drop"]) == 0
    table = pd.read_csv(tables / "table2.csv")
    assert table[table.row == "fomaml"].empty and table[table.row == "MAML"]["mean"].notna().any()


def test_report_checks_the_figures_folder_before_it_writes_a_table(tmp_path, capsys):
    assert main([*SMOKE, "--out", str(tmp_path / "runs")]) == 0
    (tmp_path / "figures").write_text("a file")
    assert main(["report", "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "tables"),
                 "--figures", str(tmp_path / "figures")]) == 2
    assert "--figures" in capsys.readouterr().err and not (tmp_path / "tables").exists()


def dirty_store(tmp_path: Path, commit: str, segment_commits: list[str | None]) -> Store:
    store = Store(tmp_path)
    store.begin(RunRecord("r", "sinusoid", "maml", "paper", 0, "cpu", {"x": 1}, {}, commit, "test"))
    store.record("r", "segments", [{"commit": c} for c in segment_commits])
    store.finish("r", [Score(i, 5, 0, "mse", float(i)) for i in range(10)])
    return store


@pytest.mark.parametrize("commit,segments,dirty", [
    ("abc", ["abc", "abc"], False),
    ("abc-dirty", ["abc-dirty"], True),
    ("abc", ["old-dirty", "abc"], True),  # resumed from clean code, but trained from dirty code before
    ("abc", [None], False),  # a segment from before commits were kept: unknown, not dirty
])
def test_a_cell_from_a_dirty_tree_is_marked(tmp_path, commit, segments, dirty):
    spec = TableSpec("t", "t", "sinusoid", "mse", {"5-shot": 5}, {"0 steps": 0}, {"MAML": "maml"})
    frame = build(spec, dirty_store(tmp_path, commit, segments), True)
    assert frame.dirty_tree.tolist() == [dirty]
    text = markdown(spec, frame)
    assert ("†" in text) == dirty and ("uncommitted changes" in text) == dirty


def test_a_paper_profile_run_refuses_a_dirty_tree_unless_allowed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "git_commit", lambda: "0123456789abcdef-dirty")
    paper = ["run", "--suite", "sinusoid", "--learners", "scratch", "--profile", "paper", "--quiet",
             "--set", "eval_tasks=10", "--out", str(tmp_path / "runs")]
    assert main(paper) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "0123456789ab has uncommitted changes" in err and "--allow-dirty" in err
    assert not (tmp_path / "runs").exists()
    assert main([*SMOKE, "--out", str(tmp_path / "smoke")]) == 0  # other profiles are not held to it
    assert main([*paper, "--allow-dirty"]) == 0
    (run,) = Store(tmp_path / "runs").runs().itertuples()
    assert run.git_commit.endswith("-dirty") and "--allow-dirty" in run.command


@pytest.mark.parametrize("suite,metric,lower,worst", [("sinusoid", "mse", True, "| ∞"),
                                                       ("omniglot", "accuracy", False, "| -∞")])
def test_the_run_summary_counts_a_diverged_task_as_the_worst_value_of_the_suites_metric(tmp_path, suite, metric,
                                                                                         lower, worst):
    assert registry().suite(suite).lower_is_better is lower
    store = Store(tmp_path)
    store.begin(RunRecord("r", suite, "maml", "smoke", 0, "cpu", {}, {}, None, "test"))
    store.finish("r", [Score(0, 5, 0, metric, 1.0), Score(1, 5, 0, metric, float("nan"))])
    assert f"{worst} (1 of 2 tasks diverged)" in summary(store, ["r"], registry())
