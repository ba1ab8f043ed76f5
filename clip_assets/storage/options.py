"""One spelling of how to reach a store: a flat mapping of option names to values, as Lance and fsspec take.

Each backend declares its options as frozen dataclasses; `parse_options` builds them from the mapping, so
the same `storage_options` serve a Dagster resource (strings from YAML and the environment), the CLI, the
NeMo stage and `open_dataset`. Values given as strings are converted to the field's type; a name that is
not a field of the backend is either another backend's (ignored: one mapping may serve an inbox and an
output on different stores) or unknown to all (a typo: refused, naming it and what the backend takes).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


class StorageOptionError(ValueError):
    """A storage option that is unknown, or whose value does not fit it; the message names both."""


def option_names(option_types: Sequence[type]) -> tuple[str, ...]:
    """The names a backend takes: the fields of its option types."""
    return tuple(field.name for option_type in option_types for field in dataclasses.fields(option_type))


def parse_options(
    backend: str,
    option_types: Sequence[type],
    options: Mapping[str, Any],
    known_elsewhere: Collection[str] = (),
) -> list[Any]:
    """An instance of each of `option_types` from the names in `options` that are its fields.

    `known_elsewhere` are the names other backends take; any other name is refused. A value of None
    leaves the field at its default.
    """
    own = set(option_names(option_types))
    unknown = sorted(set(options) - own - set(known_elsewhere))
    if unknown:
        raise StorageOptionError(
            f"storage option {unknown[0]!r} is not an option of {backend} (it takes: {', '.join(sorted(own))})"
        )
    built = []
    for option_type in option_types:
        hints = typing.get_type_hints(option_type)
        values = {
            field.name: _convert(backend, field.name, options[field.name], hints[field.name])
            for field in dataclasses.fields(option_type)
            if options.get(field.name) is not None
        }
        try:
            built.append(option_type(**values))
        except (TypeError, ValueError) as exc:
            raise StorageOptionError(f"{backend} storage options: {exc}") from None
    return built


def options_of(*settings: Any) -> dict[str, Any]:
    """The flat mapping that rebuilds `settings` (option dataclass instances): their fields that differ
    from the defaults, so a mapping made from objects reads like one written by hand."""
    flat: dict[str, Any] = {}
    for setting in settings:
        if setting is None:
            continue
        defaults = type(setting)()
        for field in dataclasses.fields(setting):
            value = getattr(setting, field.name)
            if value != getattr(defaults, field.name):
                flat[field.name] = value
    return flat


def _convert(backend: str, name: str, value: Any, hint: Any) -> Any:
    """`value` as the field's type: strings from YAML or the environment become numbers and booleans."""
    allowed = [arg for arg in typing.get_args(hint) if arg is not type(None)] if _is_union(hint) else [hint]
    for target in allowed:
        converted = _as(value, target)
        if converted is not _NO:
            return converted
    expected = " or ".join(_describe(target) for target in allowed)
    raise StorageOptionError(f"storage option {name!r} of {backend}: {value!r} is not {expected}")


_NO = object()


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _as(value: Any, target: Any) -> Any:
    if typing.get_origin(target) is Literal:
        return value if value in typing.get_args(target) else _NO
    if target is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        return True if text in TRUE else False if text in FALSE else _NO
    if target in (int, float):
        if isinstance(value, bool):
            return _NO
        try:
            number = target(value)
        except (TypeError, ValueError):
            return _NO
        return number
    if target is str:
        return value if isinstance(value, str) else _NO
    return value if isinstance(value, target) else _NO


DESCRIPTIONS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _describe(target: Any) -> str:
    if typing.get_origin(target) is Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(target))
    return DESCRIPTIONS.get(target, f"a {getattr(target, '__name__', target)}")
