"""The MAML paper's tables, built from the results store with the paper's values beside ours."""
from __future__ import annotations

from pathlib import Path

from harness import hookimpl
from harness.tables import TableSpec, paper_cells

REFERENCE = Path(__file__).parent / "reference" / "paper-results.csv"
STEPS = {"0 steps": 0, "1 step": 1, "5 steps": 5, "10 steps": 10}


@hookimpl
def harness_tables() -> list[TableSpec]:
    return [
        TableSpec(
            name="table2",
            title="Table 2: sinusoid regression, MSE after K-shot fine-tuning (paper: 5-shot; ours also 10 and 20)",
            suite="sinusoid", metric="mse",
            settings={"5-shot": 5, "10-shot": 10, "20-shot": 20}, columns=STEPS,
            rows={"multi-task no reg": "multitask-noreg", "multi-task l2 reg": "multitask-l2",
                  "multi-task reg to mean theta": "multitask-mean", "pretrain on all tasks": "pretrain",
                  "MAML": "maml"},
            paper=paper_cells(REFERENCE, 2), paired_with="MAML",
        ),
    ]
