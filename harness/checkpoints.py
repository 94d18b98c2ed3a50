"""Files of a run: resumable training checkpoints and the trained model (a plain state_dict plus a JSON config).

Everything is written atomically (temporary file, then rename) and read with `weights_only=True`: a file that does not
load that way (damaged, truncated, or holding objects other than tensors, whose loading could run code) is a one-line
UsageError naming it and the fix, never loaded otherwise.
"""
from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from harness.errors import UsageError
from harness.files import write_atomic, write_text

TRAIN = "train-checkpoint.pt"
MODEL = "model.pt"
CONFIG = "config.json"

TRAIN_SECONDS = "harness_train_seconds"  # the runner's own entries in a learner's training checkpoint
CONTINUED_FROM = "harness_continued_from"
SEGMENTS = "harness_segments"
PROGRESS = "harness_progress"  # {"done": iterations done, "of": total, "unit": the progress bar's label}


def save_tensors(path: Path, obj: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save(dict(obj), f))


def load_tensors(path: Path) -> dict[str, Any] | None:
    """The dict at `path` (tensors and plain containers only), or None if there is none; a file that cannot be read
    as such is a UsageError (`unreadable`)."""
    if not path.exists():
        return None
    try:
        with warnings.catch_warnings():  # torch's warnings about a file's pickle protocol are not the user's concern
            warnings.simplefilter("ignore")
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: unsafe, so not passed on
        raise unreadable(path, "it is damaged, or holds objects other than tensors, which are not loaded since "
                               "loading them could run code") from None
    except OSError as exc:
        raise unreadable(path, exc.strerror or str(exc)) from None
    except Exception:  # torch reports a damaged or truncated file as RuntimeError, EOFError, ...
        raise unreadable(path, "it is damaged or truncated") from None
    if not isinstance(obj, dict):
        raise unreadable(path, f"it holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def unreadable(path: Path, why: str) -> UsageError:
    """The one-line error for a run's file at `path` that cannot be loaded, and `why`."""
    return UsageError(f"{path} cannot be read ({why}); delete it and run its run again (with --rerun if it is done)")


def save_model(run_dir: Path, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> None:
    """The trained model: `model.pt` (state_dict) and `config.json`, loadable without the harness."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / CONFIG, json.dumps(dict(config), indent=2, sort_keys=True))
    save_tensors(run_dir / MODEL, state)


def training_progress(run_dir: Path, config: Mapping[str, Any], pace: bool = False) -> str | None:
    """How far an unfinished run's training got by its last checkpoint, e.g. "meta-train 180/500"; None without one.
    A checkpoint written before the runner kept `PROGRESS` counts its `iteration` against the config's
    `meta_iterations` ("meta-train 180 done" without one). With `pace`, also the seconds per iteration of the last
    process that trained it, its host, and the time the rest takes at that pace ("meta-train 180/500, 52 s per
    iteration on vm, about 4.6 h to go"; once all are done, "..., training done, evaluation left"), where its
    checkpoint's last segment tells. A checkpoint that cannot be read, or not as the runner writes them, gives
    "unreadable checkpoint: <path>" (so that a report goes on with the other runs)."""
    path = run_dir / TRAIN
    try:
        state = load_tensors(path)
    except UsageError:
        return f"unreadable checkpoint: {path}"
    if state is None:
        return None
    try:
        return _progress(state, config, pace)
    except (LookupError, TypeError, ValueError, AttributeError):
        return f"unreadable checkpoint: {path} (not a training checkpoint of the harness)"


def _progress(state: Mapping[str, Any], config: Mapping[str, Any], pace: bool) -> str:
    """`training_progress` of a loaded checkpoint; a LookupError, TypeError, ValueError or AttributeError where the
    runner did not write it."""
    done = state.get(PROGRESS)
    if done is None and "iteration" in state:
        done = {"done": state["iteration"] + 1, "of": config.get("meta_iterations"), "unit": "meta-train"}
    if done is None:
        return "iterations unknown"
    text = f"{done['unit']} {done['done']}" + (f"/{done['of']}" if done["of"] else " done")
    segment = (state.get(SEGMENTS) or [{}])[-1]
    resumed_after = segment.get("resumed_after")
    iterations = state.get("iteration", -1) - (-1 if resumed_after is None else resumed_after)
    if not pace or iterations <= 0 or "seconds" not in segment:
        return text
    seconds = segment["seconds"] / iterations
    host = f" on {segment['host']}" if segment.get("host") else ""
    left = "" if not done["of"] else (", training done, evaluation left" if done["done"] >= done["of"] else
                                      f", about {duration((done['of'] - done['done']) * seconds)} to go")
    return text + f", {seconds:.3g} s per iteration{host}{left}"


def duration(seconds: float) -> str:
    """A rough duration for people: "40 s", "12 min", "3.5 h"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.2g} h"
