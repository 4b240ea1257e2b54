"""Setting values checked against their declared types, converted where that is lossless.

:func:`coerce` is what :class:`voiceconv.conf.VoiceconvSettings` runs on each value it reads:
a value that already is of the declared type is kept (an exact match wins, so ``4096`` stays
an int in ``int | str``), else it is converted without loss (``10`` to a float, ``"30"`` to an
int, a path to text), else the key is named in a
:class:`~voiceconv.exceptions.ConfigurationError`. Pure: no Django, no settings.
"""

from __future__ import annotations

import math
import os
import types
import typing
from collections.abc import Callable
from typing import Any

from voiceconv.exceptions import ConfigurationError

__all__ = ["coerce", "describe"]

_NAMES = {str: "text", int: "a whole number", float: "a number", bool: "True or False"}


def describe(annotation: Any) -> str:
    """How ``annotation`` reads in an error message ("a number or None")."""
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        return " or ".join(describe(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if typing.get_origin(annotation) is dict:
        return "a dict"
    if typing.get_origin(annotation) is Callable:
        return "a callable or a dotted path"
    return _NAMES.get(annotation, str(annotation))


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation``: kept when it already is one, else converted losslessly."""
    options = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (types.UnionType, typing.Union)
        else (annotation,)
    )
    for option in options:  # an exact match wins (so 4096 stays an int in ``int | str``)
        if _matches(value, option):
            return float(value) if option is float else value
    for option in options:
        converted = _convert(value, option)
        if converted is not _NO:
            return converted
    raise ConfigurationError(
        f"VOICECONV[{name!r}] must be {describe(annotation)}, got {value!r}."
    )


_NO: Any = object()


def _matches(value: Any, option: Any) -> bool:
    if option is type(None):
        return value is None
    if option is Any:
        return True
    origin = typing.get_origin(option)
    if origin is dict:
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, (list, tuple))
    if origin is Callable:
        return callable(value)
    if option is float:
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        )
    if option is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(option, type) and isinstance(value, option)


def _convert(value: Any, option: Any) -> Any:
    """A lossless conversion of ``value`` to ``option``, or ``_NO``."""
    if isinstance(value, bool):
        return _NO  # True is not a number here
    if option is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                return _NO
    if option is float and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return _NO
        return number if math.isfinite(number) else _NO
    if option is str:
        if value is None:
            return ""
        if isinstance(value, os.PathLike):
            return os.fspath(value)
    if option is bool and value in (0, 1):
        return bool(value)
    return _NO
