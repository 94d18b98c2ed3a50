"""What this machine offers a run."""
from __future__ import annotations

import os


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it, else all)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
