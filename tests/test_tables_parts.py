"""A table in parts: tables of several suites in one pair of files (the paper's Table 1, Omniglot then MiniImagenet),
each part built from its own suite's runs, with the same setting labels kept apart by suite."""
import numpy as np
import pytest

from harness.protocols import Score
from harness.store import RunRecord, Store
from harness.tables import PaperCell, TableSpec, build, dropped, markdown, write

TASKS = 20


def part(suite: str, rows: dict[str, str | None], paper: list[PaperCell] = ()) -> TableSpec:
    return TableSpec("t", f"{suite} half", suite, "accuracy", {"5-way": 5}, {"after": 1}, rows, paper=paper,
                     paired_with="M", extra_rows=False)


SPEC = TableSpec("t", "both", "a", "accuracy", {"5-way": 5}, {"after": 1}, {"M": "m", "R": None},
                 paired_with="M", extra_rows=False,
                 parts=[part("b", {"M": "m", "F": "f"}, [PaperCell("5-way", "F", "after", 40.0)])])


def store_of(tmp_path, runs: dict[tuple[str, str], float]) -> Store:
    """One done run per (suite, learner); every test task scores the given level + noise."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    store, rng = Store(tmp_path), np.random.default_rng(0)
    for (suite, learner), level in runs.items():
        run_id = f"{suite}-{learner}-quick-s0"
        store.begin(RunRecord(run_id, suite, learner, "quick", 0, "cpu", {"x": 1}, {}, None, "test"))
        store.finish(run_id, [Score(i, 5, 1, "accuracy", float(v))
                              for i, v in enumerate(level + rng.normal(0, 1, TASKS))])
    return store


def test_each_part_is_built_from_its_own_suites_runs_under_the_tables_name(tmp_path):
    store = store_of(tmp_path, {("a", "m"): 90.0, ("b", "m"): 50.0, ("b", "f"): 45.0})
    frame = build(SPEC, store, False)
    cells = frame.set_index(["suite", "row"])
    assert frame.table.unique().tolist() == ["t"]
    assert list(cells.index) == [("a", "M"), ("a", "R"), ("b", "M"), ("b", "F")]
    assert cells.loc[("a", "M"), "mean"] == pytest.approx(90.0, abs=1)  # suite a's run, not suite b's
    assert cells.loc[("b", "M"), "mean"] == pytest.approx(50.0, abs=1)
    assert cells.loc[("b", "F"), "paired_diff"] == pytest.approx(-5.0, abs=1)  # paired with b's MAML, not a's
    assert cells.loc[("b", "F"), "paper"] == 40.0 and np.isnan(cells.loc[("a", "M"), "paper"])


def test_the_markdown_heads_each_part_with_its_suite_under_one_title(tmp_path):
    store = store_of(tmp_path, {("a", "m"): 90.0, ("b", "m"): 50.0})
    text = markdown(SPEC, build(SPEC, store, False))
    assert text.startswith("# both\n") and "b half" not in text
    a, b = text.split("## a\n")[1].split("## b\n")
    assert "| 5-way     | R     | —" in a and "F" not in a
    assert "| 5-way     | F     | not run (40)" in b
    assert text.count("Written by") == 1


def test_a_cell_of_a_part_is_its_own_cell_when_report_checks_for_drops(tmp_path):
    full = build(SPEC, store_of(tmp_path / "full", {("a", "m"): 90.0, ("b", "m"): 50.0}), False)
    write(SPEC, full, tmp_path / "tables")
    csv = tmp_path / "tables" / "t.csv"
    only_a = build(SPEC, store_of(tmp_path / "a", {("a", "m"): 90.0}), False)
    assert dropped(only_a, csv) == ["b / 5-way / M / after"]  # the same setting, row and column in suite a is kept


def test_parts_need_suites_of_their_own():
    with pytest.raises(ValueError, match="a suite of its own"):
        TableSpec("t", "t", "a", "accuracy", {"5-way": 5}, {"after": 1}, {"M": "m"}, parts=[part("a", {"M": "m"})])
    with pytest.raises(ValueError, match="no parts of its own"):
        TableSpec("t", "t", "a", "accuracy", {"5-way": 5}, {"after": 1}, {"M": "m"},
                  parts=[TableSpec("t", "t", "b", "accuracy", {"5-way": 5}, {"after": 1}, {}, parts=[part("c", {})])])
