"""Omniglot (Lake et al. 2015): 1,623 handwritten characters from 50 alphabets, 20 drawings each.

`python -m harness data prepare omniglot` takes the standard archives `omniglot-py/images_background.zip` and
`images_evaluation.zip` (torchvision's layout) from the data directory (with `--download`, fetched there first from
the official source and checked against the published md5), extracts them into the cache, verifies the
counts (50 alphabets, 1,623 characters, 32,460 images), and stores every image resized to 28x28 as one uint8 tensor
`[1623, 20, 28, 28]` (1 = ink) with the character names in a JSON index, for fast loading.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.data import build_atomically, download, extract_zip
from harness.errors import UsageError
from harness.files import write_atomic, write_text
from harness.protocols import Dataset
from harness.seeding import generator

ARCHIVES = ("images_background.zip", "images_evaluation.zip")
SOURCE = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
MD5 = {"images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
       "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811"}
"""The official archives' published md5 (as torchvision checks them)."""
SPLIT = Path(__file__).parent / "reference" / "omniglot-split.json"
"""The committed class split: character names per split ("train", "val", "test")."""
SPLIT_SIZES = {"train": 1100, "val": 100, "test": 423}
"""Paper: 1,200 characters for meta-training (here 100 of them held out for validation), the other 423 for testing."""
ALPHABETS, CHARACTERS, DRAWINGS = 50, 1623, 20
SIZE = 28


class OmniglotData(Dataset):
    name = "omniglot"
    description = "Omniglot, 1,623 characters x 20 drawings, resized to 28x28"

    @staticmethod
    def archives(data: Path) -> Path:
        """The folder holding both archives: `<data>/omniglot/omniglot-py` or `<data>/omniglot-py`."""
        for folder in (data / "omniglot" / "omniglot-py", data / "omniglot-py"):
            if all((folder / a).is_file() for a in ARCHIVES):
                return folder
        raise UsageError(f"Omniglot not found: put {' and '.join(ARCHIVES)} in {data / 'omniglot' / 'omniglot-py'} "
                         "(or pass --data-dir / set HARNESS_DATA to the folder that holds omniglot/)")

    def download(self, data: Path) -> Path:
        """Fetch the official archives into `<data>/omniglot/omniglot-py`, checking their published md5."""
        folder = data / "omniglot" / "omniglot-py"
        for archive in ARCHIVES:
            download(f"{SOURCE}/{archive}", folder / archive, MD5[archive])
        return folder

    def prepare(self, data: Path, cache: Path) -> Path:
        """The prepared folder in `cache` (built once; an existing one is complete by construction)."""
        return build_atomically(cache / "omniglot", lambda tmp: self._build(self.archives(data), tmp))

    def _build(self, archives: Path, out: Path) -> None:
        raw = out / "raw"
        raw.mkdir()
        for archive in ARCHIVES:
            extract_zip(archives / archive, raw)
        characters = sorted(p for part in ("images_background", "images_evaluation")
                            for p in (raw / part).glob("*/*") if p.is_dir())
        alphabets = {p.parent.name for p in characters}
        images = [sorted(c.glob("*.png")) for c in characters]
        counts = (len(alphabets), len(characters), sum(map(len, images)))
        if counts != (ALPHABETS, CHARACTERS, CHARACTERS * DRAWINGS) or any(len(i) != DRAWINGS for i in images):
            raise UsageError(f"Omniglot in {archives} has {counts[0]} alphabets, {counts[1]} characters and "
                             f"{counts[2]} images, not {ALPHABETS}, {CHARACTERS} and {CHARACTERS * DRAWINGS}; "
                             "replace the archives with the official ones")
        pixels = np.stack([np.stack([_small(path) for path in drawings]) for drawings in images])
        write_atomic(out / "omniglot28.pt", lambda f: torch.save(torch.from_numpy(pixels), f))
        index = [f"{c.parent.parent.name}/{c.parent.name}/{c.name}" for c in characters]
        write_text(out / "characters.json", json.dumps(index, indent=0))

    @staticmethod
    def load(prepared: Path) -> tuple[torch.Tensor, list[str]]:
        """(images uint8 [1623, 20, 28, 28] with 1 = ink, character names) of a prepared folder."""
        images = torch.load(prepared / "omniglot28.pt", weights_only=True)
        return images, json.loads((prepared / "characters.json").read_text())


def make_split(characters: list[str]) -> dict[str, list[str]]:
    """The class split: a permutation of the sorted character names seeded by ("omniglot", "split"), cut into
    `SPLIT_SIZES`, irrespective of alphabet (as the paper did). Committed as `SPLIT`; tests check it is reproducible."""
    names = sorted(characters)
    order = torch.randperm(len(names), generator=generator("omniglot", "split")).tolist()
    out, start = {}, 0
    for split, size in SPLIT_SIZES.items():
        out[split] = sorted(names[i] for i in order[start:start + size])
        start += size
    return out


def load_split() -> dict[str, list[str]]:
    """The committed class split."""
    return json.loads(SPLIT.read_text())


def _small(path: Path) -> np.ndarray:
    """One drawing as 28x28 uint8, 1 = ink (the files are 1-bit with white paper)."""
    with Image.open(path) as image:
        small = image.convert("L").resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return (np.asarray(small) < 128).astype(np.uint8)
