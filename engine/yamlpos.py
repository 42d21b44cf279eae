"""YAML loading that keeps line/column positions.

Business analysts fix definitions from error messages alone, so every value we
load must be traceable back to ``FILE:LINE:COL``.  libyaml (PyYAML's C
parser) composes the node tree -- every node carries its start mark -- and we
build plain data from it ourselves, plus a flat index ``path -> (line, col)``.
We resolve plain scalars by the YAML 1.2 core schema (``yes``/``on`` and
dates stay text) and report duplicate keys.  This is ~30x faster than a
pure-Python round-trip parse.  ruamel.yaml is used only where comments and key
order must survive a save (the studio): :func:`round_trip_dump`.

Engines only ever see plain data, never parser objects.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from ruamel.yaml import YAML

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


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> LoadedYaml:
    """Parse ``text``; raise :class:`YamlSyntaxError` with a position on failure."""
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = (exc.problem or exc.context or "invalid YAML").replace('"', "'")
        raise YamlSyntaxError(f"YAML syntax error: {problem}", line, col) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"YAML error: {exc}", 1, 1) from None
    out = LoadedYaml(data=None)
    if root is not None:
        out.values[()] = (root.start_mark.line + 1, root.start_mark.column + 1)
        out.data = _node(root, (), out)
    return out


_IMPLICIT = {"tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
             "tag:yaml.org,2002:bool", "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp"}
_INT = re.compile(r"[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOATS = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"), ".nan": float("nan")}


def _scalar(node: yaml.ScalarNode) -> Any:
    """YAML 1.2 core schema for plain scalars; quoted and explicitly tagged scalars stay text."""
    value = node.value
    if node.style not in (None, "") or node.tag not in _IMPLICIT:
        return value
    if value in ("", "~", "null", "Null", "NULL"):
        return None
    if value in ("true", "True", "TRUE"):
        return True
    if value in ("false", "False", "FALSE"):
        return False
    if _INT.fullmatch(value):
        if value.startswith(("0o", "0x")):
            return int(value, 0)
        if len(value.lstrip("+-")) > 1 and value.lstrip("+-").startswith("0"):
            return value   # leading zeros (zip codes, '007'): text, not octal
        return int(value.replace("_", ""))
    if _FLOAT.fullmatch(value) and any(c.isdigit() for c in value):
        return float(value.replace("_", ""))
    if value.lower() in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value.lower()]
    return value


def _node(node: Any, path: Path, out: LoadedYaml) -> Any:
    if isinstance(node, yaml.MappingNode):
        result: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":   # << anchors
                merged = _node(value_node, path, out)
                for m in merged if isinstance(merged, list) else [merged]:
                    for k, v in (m or {}).items() if isinstance(m, dict) else ():
                        result.setdefault(k, v)
                continue
            raw_key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else key_node.value
            key = str(raw_key).lower() if isinstance(raw_key, bool) else str(raw_key)
            if key in result:
                raise YamlSyntaxError(f"YAML syntax error: duplicate key '{key}'",
                                      key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            sub = path + (key,)
            out.keys[sub] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out.values[sub] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
            result[key] = _node(value_node, sub, out)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            sub = path + (i,)
            out.values[sub] = (item.start_mark.line + 1, item.start_mark.column + 1)
            items.append(_node(item, sub, out))
        return items
    return _scalar(node)


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def round_trip_dump(text: str, update) -> str:
    """Apply ``update(tree)`` to a ruamel round-trip tree and dump it back,
    keeping comments and key order (used by the studio)."""
    y = _yaml()
    tree = y.load(text)
    update(tree)
    buf = io.StringIO()
    y.dump(tree, buf)
    return buf.getvalue()
