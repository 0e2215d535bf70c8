"""Registries: one per seam of the pipeline (backends, steering modes, frame sinks, control producers).

A registry maps a name to a factory.  Built-in entries are written as "module:attribute" strings, so a registry
imports nothing until an entry is used (the CLI stays fast, a missing optional dependency only matters to the
entry that needs it).  Plugins and tests add entries at run time:

    from sgvis.outputs import SINKS
    SINKS.register("null", NullSink)            # or "mypkg.sinks:NullSink"
    sink = SINKS.create("null", target, context)

Adding a backend, steering mode, sink or control producer is one new module plus one line in its registry.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from sgvis.errors import UserError


class Registry:
    """Names -> factories for one kind of pipeline part (`kind` names it in error messages)."""

    def __init__(self, kind: str, entries: dict[str, str | Callable[..., Any]] | None = None):
        self.kind = kind
        self._entries: dict[str, str | Callable[..., Any]] = dict(entries or {})

    def register(self, name: str, factory: str | Callable[..., Any], replace: bool = False) -> None:
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        self._entries[name] = factory

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as `name` (imported on first use); one-line UserError for unknown names."""
        try:
            entry = self._entries[name]
        except KeyError:
            raise UserError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}") \
                from None
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            target: Any = importlib.import_module(module)
            for part in attr.split("."):
                target = getattr(target, part)
            entry = target
            self._entries[name] = entry
        return entry

    def create(self, name: str, *args, **kwargs):
        return self.get(name)(*args, **kwargs)
