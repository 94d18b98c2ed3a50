"""Discovery: load every entry point of the group `harness`, register it with pluggy, and collect what it provides.

A plugin that fails to import, or whose hook raises, is reported with its distribution's name; the others still work.
"""
from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from harness import hookspecs
from harness.errors import UsageError
from harness.protocols import Dataset, Learner, Suite, violations


@dataclass(frozen=True)
class Provided:
    """One thing a plugin provides, with the distribution it came from."""

    name: str
    obj: Any
    dist: str


@dataclass
class Registry:
    """Everything the installed plugins provide, by name."""

    learners: dict[str, Provided] = field(default_factory=dict)
    suites: dict[str, Provided] = field(default_factory=dict)
    tables: dict[str, Provided] = field(default_factory=dict)
    figures: dict[str, Provided] = field(default_factory=dict)
    datasets: dict[str, Provided] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # a suite or learner name -> why it was not registered

    def learner(self, name: str) -> Any:
        return self._lookup(self.learners, name, "learner")

    def suite(self, name: str) -> Any:
        return self._lookup(self.suites, name, "suite")

    def _lookup(self, table: dict[str, Provided], name: str, what: str) -> Any:
        if name in table:
            return table[name].obj
        if name in self.rejected:
            raise UsageError(self.rejected[name])
        known = ", ".join(sorted(table)) or "none installed"
        raise UsageError(f"unknown {what} {name!r}; known {what}s: {known} (see `python -m harness list`)")


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "unknown distribution"


def plugin_manager() -> tuple[pluggy.PluginManager, dict[str, str], list[str]]:
    """A PluginManager with every loadable `harness` entry point registered; (manager, plugin -> dist, failures)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    dists: dict[str, str] = {}
    failures: list[str] = []
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        dist = _dist_name(ep)
        if pm.has_plugin(ep.name):
            failures.append(f"plugin {ep.name!r} from {dist}: name already taken by {dists[ep.name]}; skipped")
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not take the harness down
            failures.append(f"plugin {ep.name!r} from {dist} failed to load: {type(exc).__name__}: {exc}")
            continue
        dists[ep.name] = dist
    return pm, dists, failures


@functools.cache
def registry() -> Registry:
    """The registry of the current environment (loaded once per process)."""
    pm, dists, failures = plugin_manager()
    reg = Registry(failures=failures)
    hooks: list[tuple[Callable[[], Any], dict[str, Provided], type | None]] = [
        (pm.hook.harness_learners, reg.learners, Learner),
        (pm.hook.harness_suites, reg.suites, Suite),
        (pm.hook.harness_tables, reg.tables, None),
        (pm.hook.harness_figures, reg.figures, None),
        (pm.hook.harness_datasets, reg.datasets, Dataset),  # instances
    ]
    for hook, into, protocol in hooks:
        for impl in hook.get_hookimpls():
            dist = dists[impl.plugin_name]
            try:
                provided = list(impl.function())
            except Exception as exc:
                reg.failures.append(f"plugin {impl.plugin_name!r} from {dist}: {hook.name} raised "
                                    f"{type(exc).__name__}: {exc}")
                continue
            for obj in provided:
                name = getattr(obj, "name", repr(obj))
                broken = [] if protocol is None else violations(type(obj), protocol) if protocol is Dataset else (
                    violations(obj, protocol) if isinstance(obj, type) else [f"{hook.name} gave an instance, not a "
                                                                             "class"])
                if broken:
                    what = protocol.__name__.lower()
                    reg.rejected[name] = (f"{what} {name!r} from {dist} breaks the plugin contract "
                                          f"(harness.protocols): {'; '.join(broken)}; skipped - report it to the "
                                          f"plugin's authors")
                    reg.failures.append(reg.rejected[name])
                    continue
                if name in into:
                    reg.failures.append(f"{name!r} from {dist} clashes with the one from {into[name].dist}; skipped")
                    continue
                into[name] = Provided(name, obj, dist)
    return reg
