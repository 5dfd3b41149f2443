"""A small name → factory registry, shared by algorithms, backbones and datasets (timm-style)."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from metakit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a name to a factory; `build(name, **kwargs)` validates kwargs against its signature."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}"
            ) from None

    def build(self, name: str, /, **kwargs: Any) -> T:
        factory = self.get(name)
        return factory(**coerce_kwargs(factory, kwargs, f"{self.kind} {name!r}"))


def signature_of(fn: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], dict, bool]:
    """Named parameters, type hints, and whether unknown keywords are accepted.

    A class whose `__init__` forwards `**kwargs` to its parent gets the parent's parameters
    too, so options of subclasses are validated and coerced like their parents'.
    """
    targets = (
        [c.__init__ for c in fn.__mro__ if "__init__" in vars(c)] if inspect.isclass(fn) else [fn]
    )
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    for target in targets:
        sig = inspect.signature(target)
        try:
            target_hints = typing.get_type_hints(target)
        except Exception:  # pragma: no cover - unresolvable annotations are left uncoerced
            target_hints = {}
        for name, p in sig.parameters.items():
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                params.setdefault(name, p)
                if name in target_hints:
                    hints.setdefault(name, target_hints[name])
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return params, hints, False
    return params, hints, True


def coerce_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Check `kwargs` against `fn`'s signature; coerce strings (from --set) to annotated types."""
    params, hints, accepts_any = signature_of(fn)
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key not in params and not accepts_any:
            raise ConfigError(f"{what} has no option {key!r}; accepted: {', '.join(params)}")
        out[key] = coerce_value(value, hints.get(key), f"{what} option {key!r}")
    return out


def coerce_value(value: Any, hint: Any, what: str) -> Any:
    """Convert `value` to `hint` where that is unambiguous; raise ConfigError otherwise."""
    if hint is None or hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(value, option, what)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{what}: cannot use {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{what} must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        (inner, *_) = typing.get_args(hint) or (Any,)
        return origin(coerce_value(v, inner, what) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on"}:
            return True
        if isinstance(value, str) and value.lower() in {"false", "0", "no", "off"}:
            return False
        raise ConfigError(f"{what} must be true or false, got {value!r}")
    if hint in (int, float, str):
        if isinstance(value, bool) and hint is not str:
            raise ConfigError(f"{what} must be {hint.__name__}, got {value!r}")
        try:
            converted = hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{what} must be {hint.__name__}, got {value!r}") from None
        if hint is int and isinstance(value, float) and value != converted:
            raise ConfigError(f"{what} must be a whole number, got {value!r}")
        return converted
    return value
