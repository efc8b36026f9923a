"""The project's own rules for JSON: how deep it may nest, and why a text or value is refused.

msgspec encodes and decodes. When it refuses something, the reason a person reads comes
from here, so that no message carries a dependency's wording (which changes between
releases) and no limit depends on the interpreter: how deep JSON may nest used to be
whatever stack the Python version gave the decoder; now what enters the log (the writer's
metadata, ``append``'s input, the importer's metadata) nests at most ``MAX_JSON_DEPTH``
levels on every version. Reading the log takes whatever earlier versions wrote.

The functions that explain a refusal run only after one, so they cost nothing on the path
that succeeds.
"""

from __future__ import annotations

import json
import math
import re
import types
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import msgspec

# Far deeper than real metadata, and shallow enough that msgspec (which recurses per level,
# within the interpreter's recursion limit of 1,000 frames) decodes it on every Python.
MAX_JSON_DEPTH: Final = 256

# A JSON string (escapes included) or one bracket: strings are skipped when counting depth.
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')
_LONE_HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])")
_OPENERS: Final = frozenset(b"[{")
_REPR_LIMIT: Final = 60


def too_deep(text: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON ``text`` nests arrays and objects deeper than ``limit``."""
    # A text with no more brackets than the limit cannot nest deeper: most texts end here.
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        first = match.group()[0]
        if first in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif first != ord('"'):
            depth -= 1
    return False


def text_problem(text: bytes | memoryview) -> str:
    """Why ``text`` is not a JSON document the project accepts (after a decoder refused it)."""
    parsed = _parse(text)
    return parsed if isinstance(parsed, str) else "not valid JSON"


class _Parsed:
    """A JSON document the standard library's parser read (numbers out of range as inf)."""

    def __init__(self, value: object) -> None:
        self.value = value


def _parse(text: bytes | memoryview) -> _Parsed | str:
    """The document in ``text``, or why it is refused, in the project's words."""
    data = bytes(text)
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start})"
    if too_deep(data):
        return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    if _LONE_HIGH_SURROGATE.search(data):
        return "holds a lone UTF-16 surrogate escape; text must be valid Unicode"
    try:
        # The standard library's parser, to name what it refuses (its wording is not shown,
        # and nor is its error position, which differs between Python versions).
        return _Parsed(json.loads(decoded, parse_constant=_refuse_constant))
    except json.JSONDecodeError:
        return "not valid JSON"
    except ValueError as exc:  # _refuse_constant
        return str(exc)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def value_problem(value: object) -> str | None:
    """Why a Python value cannot be stored as JSON that reads back equal, or None if it can.

    Accepted: None, bool, int (64-bit), finite float, str, list, tuple, and mappings with
    string keys, nested at most ``MAX_JSON_DEPTH`` deep.
    """
    stack: list[tuple[object, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, where = stack.pop()
        if item is None or isinstance(item, bool | str):
            continue
        if isinstance(item, int):
            if not -(2**63) <= item < 2**64:
                return f"{_at(where)}the number {item} does not fit in 64 bits"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{_at(where)}{item} is not a JSON number"
        elif isinstance(item, list | tuple | Mapping):
            if depth > MAX_JSON_DEPTH:
                return f"nested deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(item, Mapping):
                for key, inner in item.items():
                    if not isinstance(key, str):
                        return f"{_at(where)}key {_short(key)} is not a string"
                    stack.append((inner, depth + 1, f"{where}.{key}"))
            else:
                stack.extend((inner, depth + 1, f"{where}[{i}]") for i, inner in enumerate(item))
        else:
            return f"{_at(where)}a value of type {type(item).__name__} is not JSON"
    return None


def _at(where: str) -> str:
    return f"at {where.lstrip('.')}: " if where else ""


def event_problem(
    text: bytes | memoryview, types_by_tag: Mapping[str, type[msgspec.Struct]]
) -> str:
    """Why the JSON ``text`` is not an event of its ``type`` (after the decoder refused it)."""
    parsed = _parse(text)
    if isinstance(parsed, str):
        return parsed
    fields = parsed.value
    if not isinstance(fields, dict):
        return "not a JSON object"
    tag = fields.get("type")
    if not isinstance(tag, str) or tag not in types_by_tag:
        known = ", ".join(sorted(types_by_tag))
        return f"unknown event type {_short(tag)} (known types: {known})"
    for field in msgspec.structs.fields(types_by_tag[tag]):
        if field.encode_name not in fields:
            if field.required:
                return f"{tag}: the field {field.encode_name!r} is missing"
            continue
        given = fields[field.encode_name]
        if not _matches(given, field.type):
            expected = _describe(field.type)
            return f"{tag}: {field.encode_name} must be {expected}, not {_short(given)}"
    return f"not a valid {tag} event"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 1] + "…"


def _alternatives(annotation: Any) -> tuple[Any, ...]:
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return tuple(a for a in get_args(annotation) if a is not msgspec.UnsetType)
    return (annotation,)


def _matches(value: object, annotation: Any) -> bool:
    return any(_matches_one(value, option) for option in _alternatives(annotation))


def _matches_one(value: object, option: Any) -> bool:
    origin = get_origin(option)
    if origin is Annotated:  # Timestamp: a string of one shape
        pattern = next(m.pattern for m in get_args(option)[1:] if isinstance(m, msgspec.Meta))
        assert pattern is not None
        return isinstance(value, str) and re.search(pattern, value) is not None
    if origin is Literal:
        return isinstance(value, str) and value in get_args(option)
    if origin is tuple:
        inner = get_args(option)
        return (
            isinstance(value, list)
            and len(value) == len(inner)
            and all(map(_matches, value, inner))
        )
    if origin is dict:
        return isinstance(value, dict)
    return _SIMPLE.get(option, _never)(value)


def _never(value: object) -> bool:
    return False


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**64


_SIMPLE: Final[dict[Any, Callable[[object], bool]]] = {
    type(None): lambda v: v is None,
    bool: lambda v: isinstance(v, bool),
    int: _is_whole,
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def _describe(annotation: Any) -> str:
    words: list[str] = []
    for option in _alternatives(annotation):
        origin = get_origin(option)
        if origin is Annotated:
            words.append("a timestamp like 2026-11-26T10:15:33.139877Z")
        elif origin is Literal:
            words.append("one of " + ", ".join(map(repr, get_args(option))))
        elif origin is tuple:
            words.append(f"a list of {len(get_args(option))} numbers")
        elif origin is dict:
            words.append("a JSON object")
        elif origin is list:
            (item,) = get_args(option)
            words.append(f"a list of {_plural(item)}")
        else:
            words.append(_NAMES.get(option, "a value of another type"))
    return " or ".join(words)


def _plural(item: Any) -> str:
    """What a list holds, in words: its items' struct name (``tool calls``) or type."""
    if isinstance(item, type) and issubclass(item, msgspec.Struct):
        return "objects with the fields " + ", ".join(item.__struct_fields__)
    return "values that are " + _describe(item)


_NAMES: Final[dict[Any, str]] = {
    type(None): "null",
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
}
