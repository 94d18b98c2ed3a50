"""The state of a sweep's units, for `python -m harness status`.

A unit is pending (not started), running, interrupted (marked running by a process of this host that no longer
exists: killed, or stopped with Ctrl-C), failed (with its error) or done. Interrupted, failed and pending units are
what rerunning the sweep's command computes; finished units are skipped and interrupted ones resume.
"""
from __future__ import annotations

import os
import shlex
import socket
import time

import pandas as pd
from tabulate import tabulate

STATES = ("done", "running", "interrupted", "failed", "pending")


def resume_command(command: str) -> str:
    """`command` without `--rerun`: what finishes a sweep (with it, the same command would start every unit over)."""
    return shlex.join(word for word in shlex.split(command) if word != "--rerun")


def alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unit_state(status: object, host: object, pid: object) -> str:
    """One of `STATES` from a unit's run row (status None or NaN: no row yet). A run marked running by another host
    is taken at its word."""
    if not isinstance(status, str):
        return "pending"
    if status == "running" and host == socket.gethostname() and not pd.isna(pid) and not alive(int(pid)):
        return "interrupted"
    return status


def _detail(unit: pd.Series) -> str:
    progress = unit.get("progress")
    at = f"last checkpoint: {progress if isinstance(progress, str) else 'none yet'}" if "progress" in unit else ""
    if unit.state == "failed":
        return "; ".join(filter(None, [str(unit.error), at]))
    if unit.state == "running":
        return "; ".join(filter(None, [f"on {unit.host}, process {int(unit.pid)}" if not pd.isna(unit.pid) else "",
                                       at]))
    if unit.state == "interrupted":
        return "; ".join(filter(None, [at, "resumes from its last checkpoint when the command runs again"]))
    if unit.state == "done" and not pd.isna(unit.train_seconds):
        return f"meta-trained in {unit.train_seconds:.0f} s"
    return ""


def describe_sweeps(units: pd.DataFrame, latest_only: bool = True) -> str:
    """A report per sweep (the last launched only, or all): its command, the count of units per state and a table of
    its units. `units` is `Store.sweeps()`, optionally with the training `progress` of unfinished units
    (`checkpoints.training_progress`)."""
    if units.empty:
        return "no sweeps recorded in this store yet: `python -m harness run ...` records one"
    units = units.assign(state=[unit_state(*row) for row in zip(units.status, units.host, units.pid)])
    order = units.drop_duplicates("sweep_id").sort_values("launched").sweep_id.tolist()
    blocks = []
    for sweep_id in order[-1:] if latest_only else order:
        sweep = units[units.sweep_id == sweep_id].sort_values("position")
        counts = sweep.state.value_counts()
        launched = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(sweep.launched.iloc[0]))
        lines = [f"sweep {sweep_id}, last launched {launched}: `{sweep.command.iloc[0]}`",
                 ", ".join(f"{counts.get(state, 0)} {state}" for state in STATES), ""]
        table = sweep.assign(setting=sweep.setting.fillna(""), detail=sweep.apply(_detail, axis=1))
        lines.append(tabulate(table[["run_id", "learner", "setting", "seed", "state", "detail"]], headers="keys",
                              tablefmt="github", showindex=False))
        if counts.get("done", 0) < len(sweep):
            lines += ["", f"to finish it, run the command again (finished units are skipped, interrupted ones "
                      f"resume): {resume_command(sweep.command.iloc[0])}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def describe_strays(strays: list[dict[str, str | None]]) -> str:
    """The training checkpoints of runs the store has no record of: one dict per checkpoint with its run_id, progress
    and command (None where not known: the run was made with --set values, which the checkpoint does not tell)."""
    table = [{"run_id": s["run_id"], "last checkpoint": s["progress"],
              "resumed by": f"`{s['command']}`" if s["command"] else "the command that made it, with its --set values"}
             for s in strays]
    return "\n".join([f"{len(strays)} training checkpoint(s) of runs this store has no record of (brought from "
                      "another machine?):", "", tabulate(table, headers="keys", tablefmt="github")])
