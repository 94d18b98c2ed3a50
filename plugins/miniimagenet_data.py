"""MiniImagenet (Vinyals et al. 2016) in the split of Ravi & Larochelle (2017): 100 ImageNet classes x 600 images,
84x84 RGB; 64 classes for meta-training, 16 for validation, 20 for testing.

`python -m harness data prepare miniimagenet` reads the standard layout - `images/` (the 60,000 JPEGs, flat) beside
`train.csv`, `val.csv` and `test.csv` (columns `filename,label`, the label an ImageNet wnid) - from
`<data>/miniimagenet/` or `<data>` itself. It verifies the CSVs (each split's classes are the committed Ravi &
Larochelle ones, 600 images each, every file named for its label and listed once) and that every listed file is
present, checks each file against `MANIFEST.sha256` where there is one, and decodes every image once (Pillow, a few
threads) into one uint8 array `[60000, 84, 84, 3]` (1.27 GB, `.npy`) ordered by split (train, val, test), class (as in
the committed split) and file name, plus a small JSON index. The suite memory-maps that array: one copy in the page
cache, shared by every run and process.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from harness.data import build_atomically, file_digest
from harness.errors import UsageError
from harness.files import write_atomic, write_text
from harness.protocols import Dataset

SPLIT = Path(__file__).parent / "reference" / "miniimagenet-split.json"
"""The committed class split: the wnids of each split ("train", "val", "test") of Ravi & Larochelle's CSVs."""
SPLITS = ("train", "val", "test")
PER_CLASS, SIZE = 600, 84
FOLDER = "miniimagenet"
PIXELS, INDEX, MANIFEST = "images.npy", "index.json", "MANIFEST.sha256"
CHUNK = 1000
"""Images decoded (and held in memory) at a time while preparing."""
WORKERS = min(4, os.cpu_count() or 1)
"""Decoding threads: Pillow releases the GIL while it decodes (timings in docs/results.md, "Results: MiniImagenet")."""
PUT = ("put images/ (the 60,000 84x84 JPEGs) and train.csv, val.csv, test.csv (columns filename,label) of the "
       "Ravi & Larochelle split")


class MiniImagenetData(Dataset):
    name = "miniimagenet"
    description = "MiniImagenet (Ravi & Larochelle split), 100 classes x 600 images, 84x84 RGB"

    @staticmethod
    def source(data: Path) -> Path:
        """The folder holding `images/` and the three CSVs: `<data>/miniimagenet` or `<data>` itself."""
        for folder in (data / FOLDER, data):
            if (folder / "images").is_dir() and all((folder / f"{split}.csv").is_file() for split in SPLITS):
                return folder
        raise UsageError(f"MiniImagenet not found: {PUT} in {data / FOLDER} (or pass --data-dir / set HARNESS_DATA "
                         "to the folder that holds miniimagenet/)")

    def prepare(self, data: Path, cache: Path) -> Path:
        """The prepared folder in `cache` (built once; an existing one is complete by construction)."""
        return build_atomically(cache / FOLDER, lambda tmp: self._build(self.source(data), tmp))

    def _build(self, source: Path, out: Path) -> None:
        classes = load_split()
        files = {split: read_csv(source / f"{split}.csv", classes[split]) for split in SPLITS}
        ordered = [name for split in SPLITS for wnid in classes[split] for name in files[split][wnid]]
        missing = [name for name in ordered if not (source / "images" / name).is_file()]
        if missing:
            raise UsageError(f"{len(missing)} of the {len(ordered)} images the CSVs list are missing from "
                             f"{source / 'images'} (e.g. {missing[0]}); {PUT} in {source}")
        expected = read_manifest(source, ordered)
        paths = [source / "images" / name for name in ordered]
        write_atomic(out / PIXELS, lambda f: write_pixels(f, paths, expected))
        write_text(out / INDEX, json.dumps({"size": SIZE, "per_class": PER_CLASS, "splits": classes}, indent=1))

    @staticmethod
    def load(prepared: Path) -> dict[str, torch.Tensor]:
        """Each split's images of a prepared folder, uint8 [classes, 600, 84, 84, 3] (RGB), in the order of its
        classes in the committed split: views of one read-only memory map of the file (copy-on-write, never written)."""
        try:
            index = json.loads((prepared / INDEX).read_text())
            pixels = np.load(prepared / PIXELS, mmap_mode="c")
        except (OSError, ValueError) as exc:
            raise UsageError(f"{prepared} is unreadable ({exc}); remove it and prepare it again (python -m harness "
                             "data prepare miniimagenet)") from None
        total = sum(len(wnids) for wnids in index["splits"].values())
        if pixels.shape != (total * PER_CLASS, SIZE, SIZE, 3) or pixels.dtype != np.uint8:
            raise UsageError(f"{prepared / PIXELS} holds {pixels.dtype} {pixels.shape}, not uint8 "
                             f"{(total * PER_CLASS, SIZE, SIZE, 3)}; remove {prepared} and prepare it again")
        images = torch.from_numpy(pixels).view(total, PER_CLASS, SIZE, SIZE, 3)
        out, start = {}, 0
        for split, wnids in index["splits"].items():
            out[split] = images[start:start + len(wnids)]
            start += len(wnids)
        return out


def load_split() -> dict[str, list[str]]:
    """The committed class split."""
    return json.loads(SPLIT.read_text())


def read_csv(path: Path, wnids: Sequence[str]) -> dict[str, list[str]]:
    """The sorted file names of each class of a split's CSV; a UsageError unless its classes are exactly `wnids`,
    600 files each, every file named for its label (`<wnid><8 digits>.jpg`) and listed once."""
    fix = f"replace it with the {path.name} of the Ravi & Larochelle split"
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} is unreadable ({exc}); {fix}") from None
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise UsageError(f"{path} does not start with the header filename,label; {fix}")
    files: dict[str, list[str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].startswith(row[1]) or len(row[0]) != len(row[1]) + 12 \
                or not row[0].endswith(".jpg") or "/" in row[0]:
            raise UsageError(f"{path}, line {line}: {','.join(row)!r} is not <wnid><8 digits>.jpg,<wnid>; {fix}")
        files.setdefault(row[1], []).append(row[0])
    if other := sorted(set(files) ^ set(wnids)):
        raise UsageError(f"{path} lists {len(files)} classes, not the {len(wnids)} of this split of Ravi & Larochelle "
                         f"({other[0]} is {'not one of them' if other[0] in files else 'missing'}); {fix}")
    for wnid, names in files.items():
        if len(names) != PER_CLASS or len(set(names)) != PER_CLASS:
            raise UsageError(f"{path} lists {len(set(names))} distinct files of class {wnid}, not {PER_CLASS}; {fix}")
    return {wnid: sorted(names) for wnid, names in files.items()}


def read_manifest(source: Path, names: Sequence[str]) -> Mapping[str, str] | None:
    """The sha256 of each image `names` lists (`images/<name>` -> hex digest) from `MANIFEST.sha256` in `source`
    (None where there is none), after checking the CSVs' own lines; a UsageError for a mismatch or a missing line."""
    path = source / MANIFEST
    if not path.is_file():
        return None
    digests: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise UsageError(f"{path}, line {number}, is not '<sha256>  <path>' (as sha256sum writes it); put the "
                             "MANIFEST.sha256 of these images there, or remove it to skip the check")
        digests[fields[1].lstrip("*")] = fields[0].lower()
    for csv_name in (f"{split}.csv" for split in SPLITS):
        if csv_name in digests and file_digest(source / csv_name, "sha256") != digests[csv_name]:
            raise UsageError(f"{source / csv_name} does not match its sha256 in {path}; put the original file there")
    expected = {f"images/{name}": digests.get(f"images/{name}", "") for name in names}
    if absent := [name for name, digest in expected.items() if not digest]:
        raise UsageError(f"{path} has no line for {len(absent)} listed images (e.g. {absent[0]}): it belongs to other "
                         f"data; put the MANIFEST.sha256 of these images there, or remove it to skip the check")
    print(f"checking every image against {path} (sha256 of about 200 MB, while decoding)", file=sys.stderr)
    return expected


def write_pixels(f: BinaryIO, paths: Sequence[Path], expected: Mapping[str, str] | None) -> None:
    """Write the decoded images of `paths` to `f` as one `.npy` array uint8 [len(paths), 84, 84, 3], `CHUNK` images
    at a time, with a progress bar on stderr; each file checked against its `expected` sha256 where given."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (len(paths), SIZE, SIZE, 3)}
    np.lib.format.write_array_header_1_0(f, header)
    with ThreadPoolExecutor(WORKERS) as pool, tqdm(total=len(paths), desc="decoding MiniImagenet", unit="image",
                                                   mininterval=1.0, file=sys.stderr, leave=False) as bar:
        for chunk in chunks(paths, CHUNK):
            decoded = list(pool.map(decode, chunk))
            for path, (digest, _) in zip(chunk, decoded):
                if expected is not None and digest != expected[f"images/{path.name}"]:
                    raise UsageError(f"{path} does not match its sha256 in {MANIFEST}: the file is corrupt; put the "
                                     "original image there")
            f.write(np.stack([pixels for _, pixels in decoded]).tobytes())
            bar.update(len(chunk))


def chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    return (items[i:i + size] for i in range(0, len(items), size))


def decode(path: Path) -> tuple[str, np.ndarray]:
    """(sha256 of the file, its pixels uint8 [84, 84, 3] RGB); a UsageError for an unreadable or wrongly sized image."""
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UsageError(f"{path} is not a readable image ({exc}); put the original MiniImagenet file there") from None
    if pixels.shape != (SIZE, SIZE, 3):
        raise UsageError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, not {SIZE}x{SIZE}: these are not the "
                         f"standard MiniImagenet images; {PUT} there")
    return hashlib.sha256(data).hexdigest(), pixels
