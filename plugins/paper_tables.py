"""The MAML paper's tables, built from the results store with the paper's values beside ours."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from harness import hookimpl
from harness.tables import Comparison, PaperCell, Select, TableSpec, paper_cells

REFERENCE = Path(__file__).parent / "reference" / "paper-results.csv"
RELEASED = Path(__file__).parent / "reference" / "figure-4-5-official-results.csv"
RL_STEPS = {"0 steps": 0, "1 step": 1, "2 steps": 2, "3 steps": 3}
NAVIGATION = {"20 trajectories": Select(shots=40, where={"trajectories": 20, "fill_env_steps": True})}
"""2D navigation: meta-trained on 20 x 100 env steps of whole paths per task and step, evaluated on 40 x 100 per
step (paper Table 4; runs from before `fill_env_steps`, batches of 20 and 40 paths, are not mixed in)."""
RL_ROWS = {"MAML": "maml", "first-order MAML": "fomaml", "context vector": "context", "pretrain": "pretrain",
           "random init": "scratch", "oracle": "oracle"}
"""The RL learners by the names of the released results (`RELEASED`)."""

def alpha(learner: str, inner_lr: float = 0.1) -> Select:
    return Select(learner=learner, where={"inner_lr": inner_lr})


def released_cells(suite: str, setting: str) -> list[PaperCell]:
    """The authors' released curves of `suite` (mean return at 0-3 steps) as paper cells of `setting`."""
    released = pd.read_csv(RELEASED)
    return [PaperCell(setting, row.learner, column, float(getattr(row, f"step{step}")))
            for row in released[released.suite == suite].itertuples()
            for column, step in RL_STEPS.items() if pd.notna(getattr(row, f"step{step}"))]
STEPS = {"0 steps": 0, "1 step": 1, "5 steps": 5, "10 steps": 10}
SHOT_COLUMNS = {f"{k}-shot": Select(shots=k, where={"train_shots": k}) for k in (1, 5)}
"""Table 1's columns: a model trained and tested K-shot, scored after its last test step (Omniglot 3 for 5-way, 5
for 20; MiniImagenet 10)."""


def conv(learner: str) -> Select:
    return Select(learner=learner, where={"model": "conv"})


MINIIMAGENET_ROWS = {"MAML first order": "first-order MAML", "fine-tuning baseline": "fine-tuning baseline (pretrain)",
                     "nearest neighbor baseline": "nearest neighbor baseline (nearest-neighbour)"}
"""The paper's MiniImagenet rows of our learners, by the labels of the Omniglot half."""


def miniimagenet_half() -> TableSpec:
    """Table 1's MiniImagenet half: 5-way 1-shot and 5-shot, the paper's rows (matching nets and the meta-learner
    LSTM reported only), each of our learners in the row of the paper's method it is."""
    cells = [replace(c, row=MINIIMAGENET_ROWS.get(c.row, c.row)) for c in paper_cells(REFERENCE, 1, "miniimagenet")]
    return TableSpec(
        name="table1", title="Table 1, MiniImagenet half", suite="miniimagenet", metric="accuracy",
        settings={"5-way": Select(where={"ways": 5})}, columns=SHOT_COLUMNS,
        rows={"fine-tuning baseline (pretrain)": "pretrain", "nearest neighbor baseline (nearest-neighbour)":
              "nearest-neighbour", "matching nets": None, "meta-learner LSTM": None, "first-order MAML": "fomaml",
              "MAML": "maml", "context vector": "context", "random init (scratch)": "scratch"},
        paper=cells, paired_with="MAML", extra_rows=False,
    )


RELEASED_ALPHA = "MAML, alpha 0.5 (as released)"
RELEASED_RUN = "MAML, alpha 0.5, 100 iterations (as released)"
LOCOMOTION = {"cheetah-velocity": "goal velocity", "cheetah-direction": "forward/backward",
              "ant-velocity": "goal velocity", "ant-direction": "forward/backward"}
"""The locomotion suites and the paper's name of their setting."""
RLLAB = {"variant": "rllab"}
"""The locomotion runs the paper's cells are filled from: the released code's rllab environments (every profile)."""
LOCOMOTION_COMPARISONS = (Comparison("MAML", "1 step", "random init", "3 steps"),
                          Comparison("MAML", "1 step", "pretrain", "1 step", ceiling=("oracle", "0 steps")))
"""Issue 7's must-shows: MAML after one step beats random init after three, and closes at least half of the gap
between pretrain after one step and the oracle."""
GYMNASIUM_CHEETAH = ", gymnasium v5 observations"
"""The extended cheetah tables' second setting: runs made before the profiles took rllab's (`variant` unset)."""


def locomotion_settings(suite: str, setting: str, paths: int) -> dict[str, Select]:
    """The settings of `suite`'s extended table: its rllab runs, then (cheetah) its gymnasium-v5 ones."""
    settings = {setting: Select(shots=paths, where=RLLAB)}
    if suite.startswith("cheetah"):
        settings[setting + GYMNASIUM_CHEETAH] = Select(shots=paths, where={"variant": None})
    return settings


def locomotion_tables() -> list[TableSpec]:
    """Table 5 (cheetah forward/backward, context vector vs MAML) and, per locomotion suite, every learner beside
    the authors' released curves. Cells: the test's paths per step (20, ant-direction 40), any meta-training."""
    tables = [TableSpec(
        name="table5",
        title="Table 5: half cheetah forward/backward, mean return over 40 test tasks after 0-3 policy-gradient steps, "
              "context vector vs MAML (alpha 0.1, alpha / 2 after the first step)",
        suite="cheetah-direction", metric="return",
        settings={"forward/backward": Select(shots=20, where=RLLAB)}, columns=RL_STEPS,
        rows={"context vector": "context", "MAML": "maml"}, paper=paper_cells(REFERENCE, 5, "cheetah-direction"),
        paired_with="MAML", extra_rows=False,
    )]
    for suite, setting in LOCOMOTION.items():
        paths = 40 if suite == "ant-direction" else 20
        settings = locomotion_settings(suite, setting, paths)
        tables.append(TableSpec(
            name=f"table5-extended-{suite}",
            title=f"{suite}, every learner: mean return over 40 test tasks after 0-3 policy-gradient steps of {paths} "
                  "paths (alpha 0.1, alpha / 2 after the first step), beside the authors' released results "
                  "(cbfinn/maml_rl; MAML, pretrain, random init, oracle)",
            suite=suite, metric="return", settings=settings, columns=RL_STEPS, rows=dict(RL_ROWS),
            paper=[cell for label in settings for cell in released_cells(suite, label)], paired_with="MAML",
            comparisons=LOCOMOTION_COMPARISONS,
        ))
    return tables


@hookimpl
def harness_tables() -> list[TableSpec]:
    released = released_cells("navigation2d", "20 trajectories")
    return [
        TableSpec(
            name="table1",
            title="Table 1: N-way K-shot classification accuracy (%) on 600 test episodes after the test steps "
                  "(Omniglot 5-way: 3 steps, 20-way: 5 steps; MiniImagenet: 10 steps)",
            suite="omniglot", metric="accuracy",
            settings={f"{n}-way": Select(where={"ways": n}) for n in (5, 20)}, columns=SHOT_COLUMNS,
            rows={"MANN no conv": None, "MAML no conv": Select(learner="maml", where={"model": "fc"}),
                  "Siamese nets": None, "matching nets": None, "neural statistician": None, "memory mod.": None,
                  "MAML": conv("maml"), "first-order MAML": conv("fomaml"), "context vector": conv("context"),
                  "fine-tuning baseline (pretrain)": conv("pretrain"),
                  "nearest neighbor baseline (nearest-neighbour)": conv("nearest-neighbour"),
                  "random init (scratch)": conv("scratch")},
            paper=paper_cells(REFERENCE, 1, "omniglot"), paired_with="MAML", extra_rows=False,
            parts=[miniimagenet_half()],
        ),
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
        TableSpec(
            name="table3",
            title="Table 3: 5-way Omniglot accuracy (%), context vector vs MAML (conv model, 3 test steps)",
            suite="omniglot", metric="accuracy",
            settings={"5-way": Select(where={"ways": 5})}, columns=SHOT_COLUMNS,
            rows={"context vector": conv("context"), "MAML": conv("maml")},
            paper=paper_cells(REFERENCE, 3, "omniglot"), paired_with="MAML", extra_rows=False,
        ),
        TableSpec(
            name="table4",
            title="Table 4: 2D navigation, mean return over 40 test goals after 0-3 policy-gradient steps, "
                  "context vector vs MAML (inner step size alpha 0.1, alpha / 2 after the first step)",
            suite="navigation2d", metric="return", settings=NAVIGATION, columns=RL_STEPS,
            rows={"context vector": alpha("context"), "MAML": alpha("maml")},
            paper=paper_cells(REFERENCE, 4, "navigation2d"), paired_with="MAML",
            extra_rows=False,
        ),
        TableSpec(
            name="table4-extended",
            title="2D navigation, every learner: mean return over 40 test goals after 0-3 policy-gradient steps "
                  "(inner step size alpha 0.1, alpha / 2 after the first step), beside the authors' released results "
                  "(cbfinn/maml_rl, alpha 0.5 then 0.25; MAML, random init, oracle)",
            suite="navigation2d", metric="return", settings=NAVIGATION, columns=RL_STEPS,
            rows={**{label: alpha(learner) for label, learner in RL_ROWS.items()},
                  RELEASED_ALPHA: Select("maml", where={"inner_lr": 0.5, "meta_iterations": 500}),
                  RELEASED_RUN: Select("maml", where={"inner_lr": 0.5, "meta_iterations": 100})},
            paper=[*released, *(replace(c, row=row) for c in released if c.row == "MAML"
                                for row in (RELEASED_ALPHA, RELEASED_RUN))],
            paired_with="MAML",
        ),
        *locomotion_tables(),
    ]
