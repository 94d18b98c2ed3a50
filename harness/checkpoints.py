"""Files of a run: resumable training checkpoints and the trained model (a plain state_dict plus a JSON config).

Everything is written atomically (temporary file, then rename) and read with `weights_only=True`.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

TRAIN = "train-checkpoint.pt"
MODEL = "model.pt"
CONFIG = "config.json"


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: Path, obj: Mapping[str, Any]) -> None:
    _atomic(path, lambda f: torch.save(dict(obj), f))


def load_tensors(path: Path) -> dict[str, Any] | None:
    """The object at `path` (tensors and plain containers only), or None if there is none."""
    return torch.load(path, weights_only=True, map_location="cpu") if path.exists() else None


def save_model(run_dir: Path, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> None:
    """The trained model: `model.pt` (state_dict) and `config.json`, loadable without the harness."""
    _atomic(run_dir / CONFIG, lambda f: f.write(json.dumps(dict(config), indent=2, sort_keys=True).encode()))
    save_tensors(run_dir / MODEL, state)
