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

from .checkcache import checks, fingerprint, source_fingerprint

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

# Hostile input limits.  libyaml composes nested collections recursively in C:
# ~100k levels of "[" segfault the process and 20k take seconds, so nesting is
# measured on the event stream (flat, cheap) before composing.  Aliases are
# shared nodes that ``_node`` expands into plain data, so a "billion laughs"
# file of a few lines would expand to 10^9 values: the expansion is bounded by
# the file's own size.  Real definitions nest < 15 levels.
MAX_DEPTH = 64
_EXPANSION_FACTOR, _EXPANSION_SLACK = 10, 10_000


class _Budget:
    """How many more values ``_node`` may build (aliases count every time)."""

    def __init__(self, events: int):
        self.left = events * _EXPANSION_FACTOR + _EXPANSION_SLACK


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _position(text: str, index: int) -> tuple[int, int]:
    before = text[:max(index, 0)]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def _check_nesting(text: str) -> int:
    """Raise if collections nest deeper than MAX_DEPTH; return the event count."""
    loader = _Loader(text)
    depth = events = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            events += 1
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    raise YamlSyntaxError(f"YAML error: lists/mappings nest more than {MAX_DEPTH} levels deep; "
                                          "flatten the structure", mark.line + 1, mark.column + 1)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    finally:
        loader.dispose()
    return events


_CHECKER: str | None = None
_COMPOSER_SAFE = 4000    # libyaml composes a few thousand levels quickly; 20k take seconds, 100k crash


def _nesting_checked(text: str) -> int | None:
    """:func:`_check_nesting` where it is needed, remembered per text; ``None`` when skipped.

    Every level of nesting needs an indicator character (``[ { - : ?``), so a
    text with fewer than ``_COMPOSER_SAFE`` of them can't nest deep enough to
    hurt libyaml's composer, and ``_node`` still refuses more than MAX_DEPTH
    levels.  The scan is a quarter of the YAML time; most files skip it, and
    re-validation finds the rest in engine.checkcache."""
    global _CHECKER
    if sum(map(text.count, "[{-:?")) < _COMPOSER_SAFE:
        return None
    if _CHECKER is None:
        _CHECKER = source_fingerprint(__file__, yaml.__version__)
    key = fingerprint(_CHECKER, text)
    events = checks.get("yaml_nesting", key)
    if not isinstance(events, int):
        events = _check_nesting(text)
        checks.put("yaml_nesting", key, events)
    return events


def load_yaml(text: str) -> LoadedYaml:
    """Parse ``text``; raise :class:`YamlSyntaxError` with a position on failure."""
    try:
        events = _nesting_checked(text)
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = _one_line(exc.problem or exc.context or "invalid YAML").replace('"', "'")
        if "maximum nesting depth" in problem:
            # libyaml >= 0.2.6 (PyYAML 6.0.4 wheels) stops deep nesting while scanning, before our
            # event check sees the 65th level: the same limit, said the same way
            raise YamlSyntaxError(f"YAML error: lists/mappings nest more than {MAX_DEPTH} levels deep; "
                                  "flatten the structure", line, col) from None
        raise YamlSyntaxError(f"YAML syntax error: {problem}", line, col) from None
    except yaml.reader.ReaderError as exc:   # a control character or bad encoding: one line, where it is
        line, col = _position(text, exc.position)
        what = f"character #x{exc.character:04x}" if isinstance(exc.character, int) else "byte"
        raise YamlSyntaxError(f"YAML error: unacceptable {what} ({exc.reason}); remove it or save the file "
                              "as plain UTF-8 text", line, col) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"YAML error: {_one_line(exc)}", 1, 1) from None
    out = LoadedYaml(data=None)
    if root is not None:
        out.values[()] = (root.start_mark.line + 1, root.start_mark.column + 1)
        out.data = _node(root, (), out, _Budget(events if events is not None else len(text)))
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
            try:
                return int(value, 0)
            except ValueError:
                raise YamlSyntaxError(f"YAML error: number with {len(value)} digits is too large; "
                                      "quote it if it is text", node.start_mark.line + 1, node.start_mark.column + 1) from None
        if len(value.lstrip("+-")) > 1 and value.lstrip("+-").startswith("0"):
            return value   # leading zeros (zip codes, '007'): text, not octal
        try:
            return int(value.replace("_", ""))
        except ValueError:   # > 4300 digits: Python refuses to convert (a DoS guard)
            raise YamlSyntaxError(f"YAML error: number with {len(value)} digits is too large; "
                                  "quote it if it is text", node.start_mark.line + 1, node.start_mark.column + 1) from None
    if _FLOAT.fullmatch(value) and any(c.isdigit() for c in value):
        return float(value.replace("_", ""))
    if value.lower() in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value.lower()]
    return value


def _node(node: Any, path: Path, out: LoadedYaml, budget: _Budget, depth: int = 0) -> Any:
    budget.left -= 1
    if depth > MAX_DEPTH:
        raise YamlSyntaxError(f"YAML error: lists/mappings nest more than {MAX_DEPTH} levels deep (or an alias *name "
                              "sits inside its own anchor); flatten the structure",
                              node.start_mark.line + 1, node.start_mark.column + 1)
    if budget.left < 0:
        raise YamlSyntaxError("YAML error: aliases (*name) expand to too much data or refer to themselves; "
                              "write the values out instead", node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":   # << anchors
                merged = _node(value_node, path, out, budget, depth + 1)
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
            result[key] = _node(value_node, sub, out, budget, depth + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            sub = path + (i,)
            out.values[sub] = (item.start_mark.line + 1, item.start_mark.column + 1)
            items.append(_node(item, sub, out, budget, depth + 1))
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
