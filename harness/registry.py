"""Plugin discovery and the three registries (suites, detectors, analyses).

Plugins are modules named under the ``harness`` entry-point group; the built-ins are listed
in this project's ``pyproject.toml`` exactly as a third-party package lists its own.
``HARNESS_PLUGINS=name1,name2`` loads only those entry points (datasette-style allow-list).
A plugin that fails to import, implements a misspelled hook, or raises while registering is
recorded as broken with one line naming it and the cause; every other plugin still works.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from harness import hookspecs
from harness.errors import HarnessError, unknown_name

ENTRY_POINT_GROUP = "harness"
ALLOW_LIST_ENV = "HARNESS_PLUGINS"
KINDS = ("suite", "detector", "analysis")
_HOOK_FOR_KIND = {"suite": "register_suites", "detector": "register_detectors", "analysis": "register_analyses"}

log = logging.getLogger(__name__)


BUILTIN = "aigi-harness"  #: the distribution that ships the built-in plugins


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None
    version: str | None
    location: str | None
    error: str | None = None
    provides: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return self.error is not None


class Plugins:
    """Loaded plugins and what they registered."""

    def __init__(self, allow: set[str] | None = None):
        self.manager = pluggy.PluginManager("harness")
        self.manager.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.registry: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
        self._owner: dict[tuple[str, str], str] = {}
        self.allow = allow
        self._load(allow)
        for kind in KINDS:
            self._collect(kind)

    # -- discovery -------------------------------------------------------------------------
    def _load(self, allow: set[str] | None) -> None:
        found = entry_points(group=ENTRY_POINT_GROUP)
        names = sorted(set(found.names))
        #: allow-list names that no entry point has, each with its close matches
        self.unmatched = {name: difflib.get_close_matches(name, names, n=3, cutoff=0.5)
                          for name in sorted((allow or set()) - set(names))}
        for ep in found:
            if allow is not None and ep.name not in allow:
                continue
            if ep.name in self.info:
                continue  # the same entry point seen twice on sys.path
            dist = ep.dist
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
                location=None,
            )
            self.info[ep.name] = info
            try:
                module = ep.load()
            except Exception as exc:  # any import failure must not take the others down
                self._mark_broken(info, f"failed to import {ep.value}: {type(exc).__name__}: {exc}")
                continue
            info.location = getattr(module, "__file__", None)
            self.manager.register(module, name=ep.name)
            try:
                self.manager.check_pending()
            except pluggy.PluginValidationError as exc:
                self.manager.unregister(name=ep.name)
                self._mark_broken(info, f"{exc} (known hooks: {', '.join(_HOOK_FOR_KIND.values())})")

    def _mark_broken(self, info: PluginInfo, message: str) -> None:
        info.error = message
        log.debug("plugin '%s' is broken: %s", info.name, message)

    def _collect(self, kind: str) -> None:
        hook = getattr(self.manager.hook, _HOOK_FOR_KIND[kind])
        # Built-ins register first, so a third-party plugin reusing a built-in name is the one refused.
        impls = sorted(hook.get_hookimpls(), key=lambda impl: self.info[impl.plugin_name].distribution != BUILTIN)
        for impl in impls:
            plugin_name = impl.plugin_name
            info = self.info[plugin_name]
            if info.broken:
                continue

            def register(cls, _plugin=plugin_name):
                self._register(kind, cls, _plugin)

            try:
                impl.function(register=register)
            except Exception as exc:
                self._mark_broken(info, f"{_HOOK_FOR_KIND[kind]} raised {type(exc).__name__}: {exc}")
                for key, owner in list(self._owner.items()):
                    if owner == plugin_name:
                        del self.registry[key[0]][key[1]]
                        del self._owner[key]

    def _register(self, kind: str, cls: type, plugin_name: str) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise HarnessError(f"{cls!r} has no 'name' class attribute")
        owner = self._owner.get((kind, name))
        if owner is not None and owner != plugin_name:
            raise HarnessError(f"{kind} '{name}' is registered by both '{owner}' and '{plugin_name}'")
        self.registry[kind][name] = cls
        self._owner[(kind, name)] = plugin_name
        self.info[plugin_name].provides.append(f"{kind}:{name}")

    # -- lookup ----------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> type:
        try:
            return self.registry[kind][name]
        except KeyError:
            error = unknown_name(kind, name, self.registry[kind])
            if self.allow is not None:
                error = HarnessError(f"{error} Only the plugins {ALLOW_LIST_ENV}={','.join(sorted(self.allow))} "
                                     f"are loaded (allow-list); unset {ALLOW_LIST_ENV} to load all.")
            raise error from None

    def owner(self, kind: str, name: str) -> PluginInfo:
        return self.info[self._owner[(kind, name)]]

    @property
    def broken(self) -> list[PluginInfo]:
        return [info for info in self.info.values() if info.broken]


_loaded: Plugins | None = None


def allow_list() -> set[str] | None:
    raw = os.environ.get(ALLOW_LIST_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def get_plugins(reload: bool = False) -> Plugins:
    """The process-wide plugin set, loaded on first use."""
    global _loaded
    if _loaded is None or reload:
        _loaded = Plugins(allow_list())
        for info in _loaded.broken:
            print(f"harness: plugin '{info.name}' is broken: {info.error}", file=sys.stderr)
        for name, close in _loaded.unmatched.items():
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            print(f"harness: {ALLOW_LIST_ENV} names '{name}', but no installed plugin has that name{hint}; "
                  f"unset {ALLOW_LIST_ENV} and run `harness plugins` to list them", file=sys.stderr)
    return _loaded


def get_detector(name: str) -> type:
    return get_plugins().get("detector", name)


def get_suite(name: str) -> type:
    return get_plugins().get("suite", name)


def get_analysis(name: str) -> type:
    return get_plugins().get("analysis", name)
