"""Files of a run: resumable training checkpoints and the trained model (a plain state_dict plus a JSON config).

Everything is written atomically (temporary file, then rename) and read with `weights_only=True`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from harness.files import write_atomic, write_text

TRAIN = "train-checkpoint.pt"
MODEL = "model.pt"
CONFIG = "config.json"


def save_tensors(path: Path, obj: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save(dict(obj), f))


def load_tensors(path: Path) -> dict[str, Any] | None:
    """The object at `path` (tensors and plain containers only), or None if there is none."""
    return torch.load(path, weights_only=True, map_location="cpu") if path.exists() else None


def save_model(run_dir: Path, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> None:
    """The trained model: `model.pt` (state_dict) and `config.json`, loadable without the harness."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / CONFIG, json.dumps(dict(config), indent=2, sort_keys=True))
    save_tensors(run_dir / MODEL, state)
