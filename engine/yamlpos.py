"""YAML loading that keeps line/column positions.

Business analysts fix definitions from error messages alone, so every value we
load must be traceable back to ``FILE:LINE:COL``.  We parse with ruamel.yaml's
round-trip loader (it records positions and keeps comments, which the studio
needs when it saves), then convert the tree into plain Python data plus a flat
index ``path -> (line, col)``.  Engines only ever see the plain data, never
ruamel objects.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

Path = tuple  # tuple of str | int


class YamlSyntaxError(Exception):
    """A YAML file that does not parse; carries a 1-based position."""

    def __init__(self, message: str, line: int, col: int):
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


@dataclass
class LoadedYaml:
    """Plain data plus positions (1-based) of every value and mapping key."""

    data: Any
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: Path, prefer_key: bool = False) -> tuple[int, int]:
        """Position of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while True:
            first, second = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            if path in first:
                return first[path]
            if path in second:
                return second[path]
            if not path:
                return (1, 1)
            path = path[:-1]


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def load_yaml(text: str) -> LoadedYaml:
    """Parse ``text``; raise :class:`YamlSyntaxError` with a position on failure."""
    try:
        root = _yaml().load(text)
    except MarkedYAMLError as exc:  # syntax errors, duplicate keys
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = (exc.problem or exc.context or "invalid YAML").replace('"', "'")
        raise YamlSyntaxError(f"YAML syntax error: {problem}", line, col) from None
    except Exception as exc:  # pragma: no cover - ruamel raises few other kinds
        raise YamlSyntaxError(f"YAML error: {exc}", 1, 1) from None
    out = LoadedYaml(data=None)
    out.data = _plain(root, (), out)
    return out


def _plain(node: Any, path: Path, out: LoadedYaml) -> Any:
    if isinstance(node, CommentedMap):
        result = {}
        for key, value in node.items():
            key_s = _scalar(key)
            if not isinstance(key_s, str):
                key_s = str(key_s)
            sub = path + (key_s,)
            try:
                kl, kc = node.lc.key(key)
                out.keys[sub] = (kl + 1, kc + 1)
                vl, vc = node.lc.value(key)
                out.values[sub] = (vl + 1, vc + 1)
            except (KeyError, TypeError, AttributeError):
                pass
            result[key_s] = _plain(value, sub, out)
        return result
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            sub = path + (i,)
            try:
                il, ic = node.lc.item(i)
                out.values[sub] = (il + 1, ic + 1)
            except (KeyError, TypeError, AttributeError):
                pass
            items.append(_plain(value, sub, out))
        return items
    return _scalar(node)


def _scalar(value: Any) -> Any:
    """Turn ruamel scalar subclasses into plain Python types.

    YAML dates become ISO strings: definitions treat them as text and the
    engines parse them where a date is expected.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return value


def round_trip_dump(text: str, update) -> str:
    """Apply ``update(tree)`` to a ruamel round-trip tree and dump it back,
    keeping comments and key order (used by the studio)."""
    import io

    y = _yaml()
    tree = y.load(text)
    update(tree)
    buf = io.StringIO()
    y.dump(tree, buf)
    return buf.getvalue()
