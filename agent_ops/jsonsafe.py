"""JSON from the database, decoded so that nothing downstream can hit Python's recursion limit.

The SQL limits the nesting of new inputs, but rows written before that limit (or by the table owner) may
hold JSON nested thousands of levels deep. `json.loads` raises RecursionError on such a document, and even
one it can decode (a few hundred levels) breaks every recursive consumer after it: `json.dumps` with
`default=`, dataclass walks in the CLI, templates. So `loads` never returns anything deeper than
`MAX_DEPTH`: each container nested deeper is replaced by `TRUNCATED`, a string that renders and re-encodes
like any other, and that `contains_truncated` can tell apart from a string the data really held.

Decoding stays on the C decoder; the iterative decoder below runs only for documents that are too deep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from json.decoder import JSONDecodeError, scanstring  # type: ignore[attr-defined]  # C, untyped in typeshed
from json.scanner import NUMBER_RE
from typing import Any

# Twice the SQL limit on the nesting of inputs (64): a payload sits a few levels down in every answer
# (list -> step -> payload, mission -> steps -> step -> output), so data the database accepts today is
# never cut, while recursive consumers stay far below Python's default recursion limit of 1000.
MAX_DEPTH = 128


class Truncated(str):
    """The stand-in for a container nested deeper than MAX_DEPTH (a str, so it renders and re-encodes)."""

    __slots__ = ()


TRUNCATED = Truncated(f"<nested deeper than {MAX_DEPTH} levels>")

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_STRUCTURE = re.compile(r'[\[\]{}"]')
_CLOSING = {"[": "]", "{": "}"}
_CONSTANTS = {
    "null": None,
    "true": True,
    "false": False,
    # json.loads accepts these too; Postgres never writes them, but both decoders must agree.
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}

Buffer = str | bytes | bytearray | memoryview


def loads(data: Buffer) -> Any:
    """`json.loads`, except that containers nested deeper than MAX_DEPTH come back as TRUNCATED."""
    if isinstance(data, memoryview):
        data = bytes(data)
    text = data.decode(json.detect_encoding(data), "surrogatepass") if isinstance(data, (bytes, bytearray)) else data
    try:
        value = json.loads(text)
    except RecursionError:
        return _decode_bounded(text, MAX_DEPTH)
    if could_be_too_deep(text) and too_deep(value):
        return _decode_bounded(text, MAX_DEPTH)
    return value


def could_be_too_deep(document: Buffer) -> bool:
    """False when the JSON text has too few brackets to nest deeper than MAX_DEPTH: a cheap first check
    (in C) that spares most documents the walk of `too_deep`."""
    if isinstance(document, str):
        return document.count("[") + document.count("{") > MAX_DEPTH
    raw = bytes(document) if isinstance(document, memoryview) else document
    return raw.count(b"[") + raw.count(b"{") > MAX_DEPTH


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` (decoded JSON) has a container nested deeper than `limit`; iterative."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in _children(node) if isinstance(child, (dict, list)))
    return False


def contains_truncated(value: Any) -> bool:
    """Whether `loads` cut something out of `value` (it holds TRUNCATED somewhere); iterative."""
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, Truncated):
            return True
        stack.extend(_children(node))
    return False


def _children(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        return iter(node.values())
    if isinstance(node, list):
        return iter(node)
    return iter(())


def _decode_bounded(text: str, limit: int) -> Any:
    """An iterative decoder: an explicit stack instead of recursion, so any depth decodes.

    Containers deeper than `limit` are skipped (checked for balanced brackets and well-formed strings only)
    and replaced by TRUNCATED. Errors are JSONDecodeError, like json.loads.
    """
    open_: list[list[Any] | dict[str, Any]] = []  # the containers being filled, outermost first
    keys: list[str] = []  # the pending key of each open object (an unused slot for arrays)
    pos = _skip_whitespace(text, 0)
    while True:
        value, pos, opened = _value(text, pos, len(open_) >= limit)
        if opened is not None:
            open_.append(opened)
            keys.append("")
            pos = _skip_whitespace(text, pos)
            if not text.startswith(_closer(opened), pos):
                if isinstance(opened, dict):
                    keys[-1], pos = _key(text, pos)
                continue  # read its first value
            value = open_.pop()
            keys.pop()
            pos += 1
        # Attach the finished value to its parent; each closing bracket finishes the parent in turn.
        while open_:
            parent = open_[-1]
            if isinstance(parent, list):
                parent.append(value)
            else:
                parent[keys[-1]] = value
            pos = _skip_whitespace(text, pos)
            if text.startswith(",", pos):
                pos = _skip_whitespace(text, pos + 1)
                if isinstance(parent, dict):
                    keys[-1], pos = _key(text, pos)
                break  # read the next value
            if not text.startswith(_closer(parent), pos):
                raise JSONDecodeError("Expecting ',' delimiter", text, pos)
            value = open_.pop()
            keys.pop()
            pos += 1
        else:
            end = _skip_whitespace(text, pos)
            if end != len(text):
                raise JSONDecodeError("Extra data", text, end)
            return value


def _closer(container: list[Any] | dict[str, Any]) -> str:
    return "]" if isinstance(container, list) else "}"


def _value(text: str, pos: int, beyond_limit: bool) -> tuple[Any, int, list[Any] | dict[str, Any] | None]:
    """The value at `pos`: (value, end, None), or (None, after the bracket, the new empty container)."""
    char = text[pos : pos + 1]
    if char in ("[", "{"):
        if beyond_limit:
            return TRUNCATED, _skip_container(text, pos), None
        return None, pos + 1, [] if char == "[" else {}
    if char == '"':
        string, end = scanstring(text, pos + 1, True)
        return string, end, None
    number = NUMBER_RE.match(text, pos)
    if number is not None:
        integer, fraction, exponent = number.groups()
        if fraction or exponent:
            return float(integer + (fraction or "") + (exponent or "")), number.end(), None
        return int(integer), number.end(), None
    for word, constant in _CONSTANTS.items():
        if text.startswith(word, pos):
            return constant, pos + len(word), None
    raise JSONDecodeError("Expecting value", text, pos)


def _key(text: str, pos: int) -> tuple[str, int]:
    """An object key and its colon; returns the key and the position of its value."""
    if not text.startswith('"', pos):
        raise JSONDecodeError("Expecting property name enclosed in double quotes", text, pos)
    key, pos = scanstring(text, pos + 1, True)
    pos = _skip_whitespace(text, pos)
    if not text.startswith(":", pos):
        raise JSONDecodeError("Expecting ':' delimiter", text, pos)
    return key, _skip_whitespace(text, pos + 1)


def _skip_container(text: str, pos: int) -> int:
    """The position after the container that opens at `pos`, without building it."""
    expected = [_CLOSING[text[pos]]]
    pos += 1
    while expected:
        found = _STRUCTURE.search(text, pos)
        if found is None:
            raise JSONDecodeError("Unterminated container", text, len(text))
        char, pos = found.group(), found.end()
        if char == '"':
            _, pos = scanstring(text, pos, True)
        elif char in _CLOSING:
            expected.append(_CLOSING[char])
        elif char != expected.pop():
            raise JSONDecodeError("Mismatched bracket", text, pos - 1)
    return pos


def _skip_whitespace(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos
