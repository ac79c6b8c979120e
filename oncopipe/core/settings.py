"""Settings on pydantic: the field types every params section uses, and one-line errors.

Sections are frozen pydantic dataclasses declared with ``@dataclass(frozen=True,
config=SETTINGS)`` (from ``pydantic.dataclasses``): an unknown key is refused
(``extra="forbid"``), a value of the wrong type is refused rather than converted (``"3"`` is
not an integer, ``1`` is not ``true``), single-field ranges are ``Field`` constraints and
``Literal`` choices, and a section's ``__post_init__`` raises ``ValueError`` for what involves
several fields. They stay dataclasses so that ``dataclasses.asdict`` (params hashes, the
model card) and ``dataclasses.replace`` (which validates again) work on them.

:func:`validate` turns a YAML mapping into a section and a :class:`pydantic.ValidationError`
into a :class:`~oncopipe.core.errors.ParamsError` whose message starts with the dotted key path:
``isic.train.demo.lr: must be > 0, got 0``.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Annotated, Any, TypeVar

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from oncopipe.core.errors import ParamsError

T = TypeVar("T")

SETTINGS = ConfigDict(extra="forbid")


def _number(value: object) -> object:
    """Numbers pass; so do numeric strings, because PyYAML reads ``1e-3`` (no dot) as one."""
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "expected a number")
    return value


def _empty_if_none(value: object) -> object:
    """A section written as ``augment:`` with nothing under it is the defaults."""
    return {} if value is None else value


Int = StrictInt
Bool = StrictBool
Str = StrictStr
Float = Annotated[float, BeforeValidator(_number)]
PosInt = Annotated[StrictInt, Field(gt=0)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
PosFloat = Annotated[Float, Field(gt=0)]
NonNegFloat = Annotated[Float, Field(ge=0)]
Section = BeforeValidator(_empty_if_none)  # Annotated[SubSection, Section]: empty = defaults


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


@typing.overload
def validate(tp: type[T], data: object, where: str) -> T: ...
@typing.overload
def validate(tp: Any, data: object, where: str) -> Any: ...


def validate(tp: Any, data: object, where: str) -> Any:
    """``data`` validated as ``tp`` (a section, or any type); ``where`` is its key path."""
    try:
        return _adapter(tp).validate_python(_empty_if_none(data)
                                            if dataclasses.is_dataclass(tp) else data)
    except ValidationError as exc:
        raise ParamsError(one_line(exc, tp, where)) from None


def one_line(exc: ValidationError, tp: Any, where: str) -> str:
    """The first error of ``exc`` as ``<key path>: <problem>`` (unknown keys first)."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] not in _UNKNOWN)
    err = errors[0]
    loc = err["loc"]
    path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    return f"{path.lstrip('.') or '(top level)'}: {_problem(err, tp, loc)}"


_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
           "less_than_equal": "<="}


def _problem(err: ErrorDetails, tp: Any, loc: tuple[int | str, ...]) -> str:
    kind, value, ctx = err["type"], err["input"], err.get("ctx", {})
    if kind in _UNKNOWN:
        allowed = _keys(tp, loc[:-1])
        return "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    if kind == "missing":
        return "missing value" if loc and isinstance(loc[-1], int) else "required key is missing"
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx['expected'].replace(' or ', ', ')}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"must be {_BOUNDS[kind]} {bound}, got {value!r}"
    if kind == "too_long":
        return f"expected at most {ctx['max_length']} value(s), got {ctx['actual_length']}"
    if kind == "too_short":
        return f"expected at least {ctx['min_length']} value(s), got {ctx['actual_length']}"
    expected = {"int_type": "an integer", "bool_type": "true or false",
                "string_type": "a string", "float_type": "a number",
                "float_parsing": "a number", "tuple_type": "a list", "list_type": "a list"}
    if kind in expected:
        return f"expected {expected[kind]}, got {value!r}"
    if kind in ("dataclass_type", "dict_type", "model_type"):
        return f"expected a mapping, got {type(value).__name__} {value!r}"
    return str(err["msg"])


def _keys(tp: Any, loc: tuple[int | str, ...]) -> list[str]:
    """The keys the mapping at ``loc`` under ``tp`` allows (empty if unknown)."""
    for part in loc:
        tp = _unwrap(tp)
        if typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif isinstance(part, str) and dataclasses.is_dataclass(tp):
            tp = typing.get_type_hints(tp, include_extras=True).get(part)
        else:
            return []
    tp = _unwrap(tp)
    return sorted(f.name for f in dataclasses.fields(tp)) if dataclasses.is_dataclass(tp) \
        else []


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp
