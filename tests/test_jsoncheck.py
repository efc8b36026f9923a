"""The project's own JSON rules: nesting depth and the words of a refusal."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal.events import TAGS
from journal.jsoncheck import MAX_JSON_DEPTH, event_problem, text_problem, too_deep, value_problem


def depth_of(value: object) -> int:
    """Reference: how deep arrays and objects nest in a decoded value (a scalar is 0)."""
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


def nested(depth: int, opener: str = "[") -> bytes:
    closer = {"[": "]", "{": "}"}[opener]
    inner = '{"k":' if opener == "{" else "["
    if opener == "{":
        return (inner * depth + "1" + closer * depth).encode()
    return (inner * depth + closer * depth).encode()


@pytest.mark.parametrize("opener", ["[", "{"])
def test_the_depth_limit_is_exact(opener: str) -> None:
    assert not too_deep(nested(MAX_JSON_DEPTH, opener))
    assert too_deep(nested(MAX_JSON_DEPTH + 1, opener))


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"code": "[" * 1000 + '\\"{' * 500, "x": [[1]]}).encode()
    assert not too_deep(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=400,
)


@settings(max_examples=200, deadline=None)
@given(json_values, st.integers(0, MAX_JSON_DEPTH + 3))
def test_too_deep_agrees_with_the_decoded_depth(value: Any, wrap: int) -> None:
    for _ in range(wrap):
        value = [value]
    text = msgspec.json.encode(value)
    assert too_deep(text) == (depth_of(value) > MAX_JSON_DEPTH)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"a":\xff}', r"^not valid UTF-8 \(byte 5\)$"),
        (b'{"a":1,}', "^not valid JSON$"),
        (b'{"a":1', "^not valid JSON$"),
        (b'{"a":Infinity}', "^Infinity is not a JSON number$"),
        (b'{"a":"\\ud800"}', "lone UTF-16 surrogate escape"),
        (nested(MAX_JSON_DEPTH + 1), f"^JSON nested deeper than {MAX_JSON_DEPTH} levels$"),
    ],
)
def test_text_problems_are_named_in_the_projects_words(text: bytes, reason: str) -> None:
    assert re.search(reason, text_problem(text))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"[1]", "^not a JSON object$"),
        (b'{"type":7}', "^unknown event type 7"),
        (b'{"type":"session_paused"}', "^session_paused: the field 'session_id' is missing$"),
        (
            b'{"type":"message_appended","session_id":"s","seq":1,"role":"robot","content":"x"}',
            "^message_appended: role must be one of 'user', 'assistant', 'system', 'tool', "
            "'developer', not 'robot'$",
        ),
        (
            b'{"type":"message_appended","session_id":"s","seq":true,"role":"user","content":"x"}',
            "^message_appended: seq must be a whole number, not True$",
        ),
        (
            b'{"type":"message_appended","session_id":"s","seq":1,"role":"user","content":"x",'
            b'"metadata":[]}',
            "^message_appended: metadata must be a JSON object or null, not",
        ),
        (
            b'{"type":"message_appended","session_id":"s","seq":1,"role":"assistant",'
            b'"content":"","tool_calls":"lookup"}',
            "^message_appended: tool_calls must be a list of objects with the fields id, name, "
            "arguments, not 'lookup'$",
        ),
        (
            b'{"type":"session_paused","session_id":"s","ts":"2026-11-26 10:00:00"}',
            "^session_paused: ts must be a timestamp like 2026-11-26T10:15:33.139877Z",
        ),
    ],
)
def test_event_problems_name_the_field(text: bytes, reason: str) -> None:
    problem = event_problem(text, TAGS)
    assert re.search(reason, problem), problem


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"a": math.nan}, "^at a: nan is not a JSON number$"),
        ({"a": [1, {"b": math.inf}]}, r"^at a\[1\]\.b: inf is not a JSON number$"),
        ({"a": {1: "x"}}, "^at a: key 1 is not a string$"),
        ({"a": {1, 2}}, "^at a: a value of type set is not JSON$"),
        ({"a": 2**64}, "does not fit in 64 bits"),
        ({"a": json.loads(nested(MAX_JSON_DEPTH))}, f"nested deeper than {MAX_JSON_DEPTH}"),
    ],
)
def test_value_problems(value: object, reason: str) -> None:
    problem = value_problem(value)
    assert problem is not None and re.search(reason, problem), problem


def test_values_within_the_rules_have_no_problem() -> None:
    value = {"a": [1, 2.5, None, True, "x", {"b": []}], "deep": json.loads(nested(255))}
    assert value_problem(value) is None
