"""TOML without a dependency: :func:`dumps` writes the few value types a sweep file holds, and
:func:`key_line` finds the line of a key (the standard library's ``tomllib`` reads TOML but
reports no positions, and an error in a sweep file should name its line).

>>> import tomllib
>>> text = dumps({"steps": 4, "losses": ["ce", "ce + 0.5*dice"], "datasets": {"a.b": {"num_cases": 6}}})
>>> print(text)
steps = 4
losses = ["ce", "ce + 0.5*dice"]
<BLANKLINE>
[datasets."a.b"]
num_cases = 6
<BLANKLINE>
>>> tomllib.loads(text) == {"steps": 4, "losses": ["ce", "ce + 0.5*dice"], "datasets": {"a.b": {"num_cases": 6}}}
True
>>> key_line(text, ("datasets", "a.b", "num_cases"))
5
"""

from __future__ import annotations

import math
import re

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def key(name: str) -> str:
    """A key: bare when it can be, else a quoted string."""
    return name if BARE_KEY.fullmatch(name) else string(name)


def string(text: str) -> str:
    """A basic string, with TOML's escapes (control characters as ``\\uXXXX``)."""
    return '"' + "".join(_ESCAPES.get(char, f"\\u{ord(char):04x}" if ord(char) < 32 or ord(char) == 127 else char)
                         for char in text) + '"'


def value(item) -> str:
    """An inline value: string, bool, int, float (also inf and nan), list or dict (inline table)."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if math.isnan(item):
            return "nan"
        if math.isinf(item):
            return "inf" if item > 0 else "-inf"
        return repr(item)  # shortest round-trip form, always with '.' or 'e'
    if isinstance(item, str):
        return string(item)
    if isinstance(item, (list, tuple)):
        return "[" + ", ".join(value(element) for element in item) + "]"
    if isinstance(item, dict):
        return "{" + ", ".join(f"{key(str(k))} = {value(v)}" for k, v in item.items()) + "}" if item else "{}"
    raise TypeError(f"cannot write {type(item).__name__} {item!r} as TOML (strings, numbers, booleans, lists, tables)")


def dumps(data: dict, comment: str = "") -> str:
    """``data`` as a TOML document: its plain values first, then each non-empty dict value as a
    ``[table]`` (nested dicts as ``[table.sub]``); dicts inside lists are inline tables.
    ``comment``: lines written first, each as ``# ...``. None values are not TOML: an error."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]

    def table(mapping: dict, path: tuple[str, ...]) -> None:
        sections = {k: v for k, v in mapping.items() if isinstance(v, dict) and v}
        if path and (len(sections) < len(mapping) or not mapping):  # a header only where the table holds values
            lines.extend(["", "[" + ".".join(key(part) for part in path) + "]"])
        for name, item in mapping.items():
            if name in sections:
                continue
            if item is None:
                raise TypeError(f"cannot write None as TOML (key {'.'.join((*path, str(name)))!r})")
            lines.append(f"{key(str(name))} = {value(item)}")
        for name, item in sections.items():
            table(item, (*path, str(name)))

    table(data, ())
    return "\n".join(lines).lstrip("\n") + "\n"


# ---------------------------------------------------------------- positions
_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?\s*(#.*)?$")
_ASSIGNMENT = re.compile(rf"^\s*({_DOTTED})\s*=")


def _parts(dotted: str) -> tuple[str, ...]:
    found = re.findall(_KEY_PART, dotted)
    return tuple(part[1:-1] if part[:1] in "\"'" else part for part in found)


def key_line(text: str, path: tuple) -> int | None:
    """The 1-based line where the key ``path`` (its table names, then the key; an int is a list
    index) is defined in the TOML ``text``: its ``key = ...`` line or its ``[table]`` header; a
    list element's first line; for a key inside an inline table, the first line from the
    enclosing element on that names it. None when the text does not show it."""
    keys = []
    for part in path:
        if isinstance(part, int):
            break
        keys.append(str(part))
    best, best_length, table = None, 0, ()
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header:
            table = _parts(header[1])
            found = table
        else:
            assignment = _ASSIGNMENT.match(line)
            if not assignment:
                continue
            found = (*table, *_parts(assignment[1]))
        if found == tuple(keys[:len(found)]) and len(found) > best_length:
            best, best_length = number, len(found)
    if best is None or best_length == len(path):
        return best
    rest = path[best_length:]
    if isinstance(rest[0], int):
        best, rest = _element_line(lines, best, rest[0]), rest[1:]
    if rest and not isinstance(rest[-1], int):  # a key inside an inline table: look on from there
        name = re.escape(str(rest[-1]))
        pattern = re.compile(rf'(^|[{{,\s])("{name}"|\'{name}\'|{name})\s*=')
        for number in range(best, len(lines) + 1):
            if number > best and _HEADER.match(lines[number - 1]):
                break
            if pattern.search(lines[number - 1]):
                return number
    return best


def _element_line(lines: list[str], start: int, index: int) -> int:
    """The line where element ``index`` of the array whose key is on line ``start`` begins (the
    key's line when the text does not show it): commas counted at the array's own depth,
    outside strings."""
    depth, element, quote, began = 0, 0, "", False
    for number in range(start, len(lines) + 1):
        line = lines[number - 1]
        position = line.index("=") + 1 if number == start else 0
        for char in line[position:]:
            if quote:
                quote = "" if char == quote else quote  # (escaped quotes are rare in a sweep file)
                continue
            if char == "#":
                break
            if char in "\"'":
                quote = char
            elif char in "[{":
                depth += 1
                if depth == 1 and char == "[":
                    began = True
                    continue
            elif char in "]}":
                depth -= 1
                if depth == 0:
                    return start
            elif char == "," and depth == 1:
                element += 1
                continue
            if began and depth >= 1 and element == index and not char.isspace():
                return number
    return start
