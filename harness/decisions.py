"""Choices made by timing, in the execution layer: `fastest_meta_gradient` resolves the kernel's vectorize="auto"
by timing vmap against the loop, and a machine-local memory makes every later process on this machine take the same
decision once one has timed its candidates for a key.

`vectorize=auto` times vmap against the plain loop and keeps the faster. The two agree only to rounding, and the
timings of near-equal candidates flip under load, so without this memory a run resumed after a crash, or the same run
in another executor's process, could differ in the last bits from an uninterrupted one. The memory lives in
`<cache>/decisions.json` (`HARNESS_CACHE`), guarded by a file lock so that parallel workers decide once; where the
cache is not writable, each process decides for itself. Delete the file to time again (e.g. after new hardware).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from harness.data import cache_dir
from harness.files import write_text
from harness.functional import LossFn, MetaGradient, meta_gradient
from harness.protocols import Params

FILE = "decisions.json"


def key_of(*parts: object) -> str:
    """A short stable key for what a decision depends on (anything with a stable `repr`)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def remembered(key: str, decide: Callable[[], str]) -> str:
    """The decision stored under `key` on this machine, else `decide()`, stored for every later process."""
    path = cache_dir() / FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_name(FILE + ".lock")):
            known = json.loads(path.read_text()) if path.exists() else {}
            if key not in known:
                known[key] = decide()
                write_text(path, json.dumps(known, indent=1, sort_keys=True))
            return known[key]
    except (OSError, json.JSONDecodeError):
        return decide()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def milliseconds(fn: Callable[..., object], *args: object, repeats: int = 2) -> float:
    """The fastest of `repeats` timed calls of `fn(*args)` after one warm-up call, in ms (CUDA work included)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
    fn(*args)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn(*args)
        sync()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def fastest_meta_gradient(
    loss_fn: LossFn, lrs: Sequence[float], adapt: Collection[str] | None = None, first_order: bool = False,
    vectorize: str = "auto", compile: bool = False,
    on_choice: Callable[[str, dict[str, float]], None] = lambda mode, ms: None,
) -> MetaGradient:
    """`meta_gradient` with `vectorize` resolved: "auto" times vmap and loop on the first call's batch (a warm-up and
    a timed call each), keeps the faster for every later call, and reports (choice, ms by mode; empty when the choice
    was remembered) to `on_choice`. The choice is remembered on this machine for the same shapes and settings
    (`remembered`), so that every process, resumed or not, computes the same numbers. Compiled, "auto" takes
    vmap (compiling the loop unrolls it over the meta-batch)."""
    if vectorize != "auto" or compile:
        mode = "vmap" if vectorize == "auto" else vectorize
        return meta_gradient(loss_fn, lrs, adapt, first_order, mode, compile)
    candidates = {mode: meta_gradient(loss_fn, lrs, adapt, first_order, mode) for mode in ("vmap", "loop")}
    chosen: list[str] = []

    def step(params: Params, *data: Tensor) -> tuple[Tensor, Params]:
        if not chosen:
            ms: dict[str, float] = {}

            def fastest() -> str:
                ms.update({mode: milliseconds(fn, params, *data, repeats=1) for mode, fn in candidates.items()})
                return min(ms, key=ms.__getitem__)

            shapes = [(k, tuple(p.shape), p.dtype) for k, p in params.items()]
            key = key_of("meta_gradient", shapes, [(tuple(d.shape), d.dtype, d.device.type) for d in data],
                                   list(lrs), sorted(adapt or []), first_order, torch.__version__,
                                   torch.get_num_threads())
            chosen.append(remembered(key, fastest))
            on_choice(chosen[0], ms)
        return candidates[chosen[0]](params, *data)

    return step
