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
