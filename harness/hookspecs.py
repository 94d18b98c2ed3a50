"""The plugin API. A plugin is a module named by an entry point in the group `harness`; it implements any of these
hooks with `@harness.hookimpl`. The built-in learners and suites register exactly this way.

    # pyproject.toml of your distribution
    [project.entry-points.harness]
    my_learner = "my_package.my_learner"
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from harness.figures import FigureSpec
    from harness.protocols import Dataset, Learner, Suite
    from harness.tables import TableSpec

PROJECT = "harness"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def harness_learners() -> Sequence[type[Learner]]:
    """Learner classes this plugin provides (each a subclass of `harness.protocols.Learner`, checked at
    registration; names must be unique)."""


@hookspec
def harness_suites() -> Sequence[type[Suite]]:
    """Suite classes this plugin provides (each a subclass of `harness.protocols.SupervisedSuite` or `RLSuite`,
    checked at registration; names must be unique)."""


@hookspec
def harness_tables() -> Sequence[TableSpec]:
    """Tables (`harness.tables.TableSpec`) this plugin knows how to build from the results store."""


@hookspec
def harness_figures() -> Sequence[FigureSpec]:
    """Figures (`harness.figures.FigureSpec`) this plugin knows how to draw from the results store (names unique)."""


@hookspec
def harness_datasets() -> Sequence[Dataset]:
    """Datasets this plugin can prepare: instances of subclasses of `harness.protocols.Dataset` (checked at
    registration; names must be unique)."""
