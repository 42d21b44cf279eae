"""JSON Schema checks with messages a business analyst can act on.

The published schemas in ``engine/schemas/`` are the single description of
what a definition file may contain: editors use them while typing and
``loom validate`` uses them here.  jsonschema's own messages are written for
programmers ("Additional properties are not allowed ('x' was unexpected)"),
so each error is rephrased and pointed at the exact key or value.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # jsonschema is imported when a file fails the fast check: it costs 0.15 s to import
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

from .problems import one_of, suggest

SCHEMA_KINDS = ("app", "form", "flow", "rules", "reports")


@lru_cache(maxsize=None)
def schema_for(kind: str) -> dict:
    text = resources.files("engine.schemas").joinpath(f"{kind}.schema.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=None)
def inlined_schema(kind: str) -> dict:
    """The schema with its local ``$ref``s inlined: resolving references on
    every value was half of the pure-Python validation time."""
    schema = schema_for(kind)
    return {k: v for k, v in _inline(schema, schema.get("$defs", {})).items() if k != "$defs"}


@lru_cache(maxsize=None)
def validator_for(kind: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator
    return Draft202012Validator(inlined_schema(kind))


def _inline(node: Any, defs: dict, depth: int = 0) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and depth < 16:
            target = defs[ref.rsplit("/", 1)[1]]
            return _inline({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs, depth + 1)
        return {k: _inline(v, defs, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs, depth) for v in node]
    return node


@lru_cache(maxsize=None)
def fast_validator_for(kind: str) -> Any:
    """jsonschema-rs over the published schema, or ``None`` when unavailable.

    It only answers "valid or not", 50-100x faster than the pure-Python
    validator; that is the common case (a package being re-validated after
    an edit is mostly valid files).  Any file it rejects -- or that it cannot
    handle, such as integers beyond 64 bits -- goes through the Python
    validator, which alone produces the messages, so the two disagreeing can
    only cost time, never hide a problem the Python validator would report
    (tests/engine/test_schema_fast_path.py checks they agree).
    """
    try:
        import jsonschema_rs
        return jsonschema_rs.validator_for(schema_for(kind))
    except Exception:  # noqa: BLE001 -- missing wheel or a schema feature it lacks: use Python only
        return None


def schema_problems(kind: str, data: Any) -> Iterator[tuple[tuple, bool, str]]:
    """Yield ``(path, at_key, message)`` for each schema error in ``data``.

    ``at_key`` says whether the position should be the key (unknown keys) or
    the value.
    """
    fast = fast_validator_for(kind)
    if fast is not None:
        try:
            if fast.is_valid(data):
                return
        except Exception:  # noqa: BLE001 -- e.g. an int beyond 64 bits: let the Python validator judge
            pass
    for error in sorted(validator_for(kind).iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        yield from _explain(error, data)


def _where(path: tuple) -> str:
    """A short context prefix: ``field 'owner': `` for forms/fields/owner/..."""
    for i, part in enumerate(path[:-1]):
        if part in ("fields", "states", "transitions", "roles", "calendars", "user_attributes") and isinstance(path[i + 1], str):
            noun = {"fields": "field", "states": "state", "transitions": "transition", "roles": "role",
                    "calendars": "calendar", "user_attributes": "attribute"}[part]
            return f"{noun} '{path[i + 1]}': "
    return ""


def _describe(value: Any) -> str:
    if isinstance(value, (dict,)):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "nothing (null)"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return f"'{value}'"


_TYPE_NAMES = {"string": "text", "object": "a mapping (key: value)", "array": "a list", "integer": "a whole number",
               "number": "a number", "boolean": "true or false", "null": "nothing"}


def _explain(error: ValidationError, root: Any) -> Iterator[tuple[tuple, bool, str]]:
    path = tuple(error.absolute_path)
    where = _where(path + ("",))
    v = error.validator
    if v == "additionalProperties":
        allowed = list((error.schema.get("properties") or {}).keys())
        extras = [k for k in error.instance if k not in allowed
                  and not any(re.match(p, k) for p in error.schema.get("patternProperties", {}))]
        for key in extras:
            yield path + (key,), True, f"{_where(path + (key, ''))}unknown key '{key}'{suggest(key, allowed) or '; ' + one_of(allowed)}"
        return
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield path, True, f"{where}missing required key '{missing}'"
        return
    if v == "enum":
        options = [str(o) for o in error.validator_value]
        if path and path[-1] == "type" and "fields" in path:
            yield path, False, f"{where}unknown type '{error.instance}'{suggest(error.instance, options)}; {one_of(options, 40)}"
        else:
            yield path, False, f"{where}{_describe(error.instance)} is not allowed for '{path[-1] if path else ''}'; {one_of(options, 40)}"
        return
    if v == "const":
        yield path, False, f"{where}expected '{error.validator_value}', got {_describe(error.instance)}"
        return
    if v == "type":
        expected = error.validator_value
        expected = [expected] if isinstance(expected, str) else expected
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
        yield path, False, f"{where}'{path[-1] if path else 'file'}' must be {names}, got {_describe(error.instance)}"
        return
    if v == "pattern":
        parent = _at(root, path)
        if isinstance(parent, dict) and error.instance in parent:  # a bad key name (propertyNames)
            yield path + (error.instance,), True, (
                f"'{error.instance}' is not a valid name: use lower_snake_case letters, digits and _ (e.g. 'model_interest')")
        elif error.validator_value.startswith("^[a-z][a-z0-9_]"):
            yield path, False, (
                f"{where}'{error.instance}' is not a valid name: use lower_snake_case letters, digits and _ (e.g. 'model_interest')")
        elif "[wdhms]" in error.validator_value:
            yield path, False, f"{where}'{error.instance}' is not a duration: write e.g. '30m', '4h', '3d' or '1h30m'"
        elif "\\d{2}:\\d{2}" in error.validator_value:
            yield path, False, f"{where}'{error.instance}' is not a time: write HH:MM (e.g. '09:00' or '09:00-18:00')"
        elif "\\d{4}-\\d{2}-\\d{2}" in error.validator_value:
            yield path, False, f"{where}'{error.instance}' is not a date: write YYYY-MM-DD"
        elif "\\d+\\.\\d+\\.\\d+" in error.validator_value:
            yield path, False, f"{where}version '{error.instance}' is not a semantic version: write e.g. 1.2.0"
        else:
            yield path, False, f"{where}'{error.instance}' does not match the expected format {error.validator_value}"
        return
    if v == "propertyNames":
        # the offending key is reported by a nested pattern error; point at the key
        bad = error.instance if isinstance(error.instance, str) else None
        for sub in error.context or []:
            bad = sub.instance
        yield path + (bad,), True, f"{where}'{bad}' is not a valid name: use lower_snake_case letters, digits and _"
        return
    if v in ("oneOf", "anyOf"):
        # labels: string or {zh, en}; pick the branch that matches the shape given
        if isinstance(error.instance, dict) and set(error.instance) - {"zh", "en"} and all(
                isinstance(k, str) for k in error.instance) and _is_text_schema(error.schema):
            bad = sorted(set(error.instance) - {"zh", "en"})
            yield path + (bad[0],), True, f"{where}a label/message takes only 'zh' and 'en', not '{bad[0]}'"
            return
        if _is_text_schema(error.schema):
            yield path, False, f"{where}'{path[-1] if path else ''}' must be text or {{zh: ..., en: ...}}, got {_describe(error.instance)}"
            return
        from jsonschema.exceptions import best_match
        best = best_match(error.context) if error.context else None
        if best is not None:
            yield from _explain(best, root)
            return
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        yield path, False, f"{where}'{path[-1]}' is {error.instance}; {v} is {error.validator_value}"
        return
    if v in ("minItems", "minProperties"):
        yield path, False, f"{where}'{path[-1] if path else 'file'}' must not be empty"
        return
    if v == "maxProperties":
        yield path, False, f"{where}put one action per list item (found {', '.join(map(str, error.instance))})"
        return
    yield path, False, f"{where}{error.message}"


def _at(root: Any, path: tuple) -> Any:
    for part in path:
        try:
            root = root[part]
        except (KeyError, IndexError, TypeError):
            return None
    return root


def _is_text_schema(schema: dict) -> bool:
    branches = schema.get("oneOf") or []
    return len(branches) == 2 and branches[0].get("type") == "string" and "zh" in (branches[1].get("properties") or {})
