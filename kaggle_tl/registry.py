"""One registry class for backbones, heads and ensemble strategies (timm's ``create_model``).

A registry maps a name to a factory: a class (heads, strategies) or any callable (a backbone
spec). ``create(name, **params)`` checks the name and every parameter against the factory's
signature before calling it, so a typo is one line naming the registry, the name and the
closest valid spelling, never a bare ``TypeError`` from deep inside.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, TypeVar

from kaggle_tl.errors import KaggleTLError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """``register`` (a decorator), ``get``, ``create(name, **params)``, ``names()``."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None):
        self.kind = kind  # "backbone", "head", "strategy": how errors name an entry
        self._entries: dict[str, T] = {}
        self._loader = loader  # imports the modules that register the built-in entries, on first use

    def register(self, name: str, entry: T | None = None):
        """``registry.register("x", factory)``, or ``@registry.register("x")`` above a class or function."""
        def decorate(value: T) -> T:
            self._entries[name] = value
            return value
        return decorate if entry is None else decorate(entry)

    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader()

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise KaggleTLError(f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}; "
                                f"choose from: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def parameters(self, name: str) -> list[str]:
        """The parameter names ``create(name, ...)`` accepts."""
        signature = inspect.signature(self.get(name))
        return [p.name for p in signature.parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def check_params(self, name: str, params: dict[str, Any], where: str | None = None) -> None:
        """One line for the first parameter ``name`` does not take; ``where`` names the setting (head_params.svm)."""
        valid = self.parameters(name)
        for key in params:
            if key not in valid:
                raise KaggleTLError(f"{where or f'{self.kind} {name}'}: unknown parameter {key!r}"
                                    f"{did_you_mean(key, valid)}; valid: {', '.join(valid)}")

    def create(self, name: str, **params: Any) -> Any:
        self.check_params(name, params)
        return self.get(name)(**params)
