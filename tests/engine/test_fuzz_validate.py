"""Property-based fuzzing of ``loom validate``: hostile definitions never crash it.

Analysts paste, half-edit and mis-indent YAML; admins upload packages from
anywhere.  Whatever the input, validation must answer with ``OK`` or a list of
problems that each name a file, a line >= 1, a column >= 1 and say something
-- never a traceback, never a hang.  Inputs are the real CRM package and the
mini fixture with their text mutated (lines deleted, duplicated, swapped,
re-indented; scalars replaced by odd types; keys dropped, invented, renamed;
expressions and templates broken; bytes, BOMs, tabs, alias bombs, deep
nesting) plus definitions built from scratch by strategies.

Run time is bounded for CI by the ``ci`` profile (deterministic, ~200
examples in all); ``LOOM_FUZZ_EXAMPLES=2000`` runs each property longer
locally (and with fresh randomness).
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.definitions import validate_package
from engine.package import PackageError, SourcePackage, read_package
from tests.conftest import CRM, FIXTURES, ROOT
from ui.wiring import load_engines

load_engines()
pytestmark = pytest.mark.fuzz

_LOCAL = os.environ.get("LOOM_FUZZ_EXAMPLES")
settings.register_profile(
    "loom-ci", derandomize=True, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "loom-local", max_examples=int(_LOCAL or 0) or 100, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = "loom-local" if _LOCAL else "loom-ci"


def examples(ci: int):
    """Settings for one property: ``ci`` examples in CI, LOOM_FUZZ_EXAMPLES locally."""
    base = settings.get_profile(PROFILE)
    return settings(base, max_examples=int(_LOCAL) if _LOCAL else ci)


MINI = read_package(FIXTURES / "mini_app")
CRM_PKG = read_package(CRM)


# ---------------------------------------------------------------------------
# the property

def assert_well_formed(package: SourcePackage) -> list:
    """Validate; every outcome must be OK or positioned, non-empty problems."""
    problems = validate_package(package)
    for p in problems:
        assert isinstance(p.file, str) and p.file, p
        assert isinstance(p.line, int) and p.line >= 1, p
        assert isinstance(p.col, int) and p.col >= 1, p
        assert isinstance(p.message, str) and p.message.strip(), p
        assert "\n" not in p.message and "Traceback" not in p.message, p   # one FILE:LINE:COL line each
    return problems


# ---------------------------------------------------------------------------
# mutation strategies (on the text of one file)

ODD_SCALARS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.just("9" * 5000), st.just("-" + "1" * 4400), st.just("0x" + "f" * 3000), st.just("1e999"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["~", "null", "true", "no", "yes", "[]", "{}", "[a, [b, {c: d}]]", "'", '"', "''", "|",
                     ">-", "&x", "*x", "*undefined", "!!binary aGVsbG8=", "!!python/object:os.system ls",
                     "!custom tag", "2026-13-45", "12:30:00", ".inf", "-.nan", "0o777", "0b101", "007",
                     "'{{ 1 + }}'", "\"{% for %}\"", "__class__", "current_user.__class__", "a.b.c.d.e",
                     "len(", "today() +", "1 +* 2", "x" * 300, "'" + "a" * 70000 + "'"]),
    st.text(max_size=40).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
)
BROKEN_BITS = st.sampled_from(["(", ")", "{{", "}}", "{%", "%}", "'", '"', "[", "]", "{", "}", ":", ": ", "- ",
                               "#", "&a ", "*a", "\t", "\ufeff", "\x00", "\x85", "\u2028", "__import__('os')",
                               " and ", " or not ", "**", "//", ".__class__", "|attr('x')", "{{ x }}",
                               "{% if %}", "{% endfor %}", "\\", "\r", "\n", "  ", "???"])
IDENT = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)


def _lines(text: str) -> list[str]:
    return text.split("\n")


@st.composite
def mutate_text(draw, text: str) -> str:
    """One random textual mutation of ``text``."""
    lines = _lines(text)
    n = len(lines)
    i = draw(st.integers(0, max(n - 1, 0)))
    kind = draw(st.sampled_from([
        "delete", "duplicate", "swap", "indent", "scalar", "drop_key", "unknown_key", "rename", "break",
        "bytes", "bom", "tabs", "anchors", "alias_bomb", "deep", "truncate", "crlf", "empty", "top_scalar"]))
    if kind == "delete" and n > 1:
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "swap":
        j = draw(st.integers(0, max(n - 1, 0)))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "indent":
        delta = draw(st.integers(-4, 6))
        stripped = lines[i].lstrip(" ")
        lines[i] = " " * max(0, len(lines[i]) - len(stripped) + delta) + stripped
    elif kind == "scalar":
        m = re.match(r"^(\s*-?\s*[\w.-]+:\s*)(.*)$", lines[i])
        value = draw(ODD_SCALARS)
        lines[i] = (m.group(1) + value) if m else lines[i] + value
    elif kind == "drop_key":
        indent = len(lines[i]) - len(lines[i].lstrip(" "))
        j = i + 1
        while j < n and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip(" ")) > indent):
            j += 1
        del lines[i:j]
    elif kind == "unknown_key":
        indent = len(lines[i]) - len(lines[i].lstrip(" "))
        lines.insert(i, " " * indent + draw(IDENT) + ": " + draw(ODD_SCALARS))
    elif kind == "rename":
        words = sorted(set(re.findall(r"[A-Za-z_][A-Za-z0-9_]{2,}", text)))
        if words:
            old = draw(st.sampled_from(words))
            return re.sub(rf"\b{re.escape(old)}\b", draw(IDENT), text)
    elif kind == "break":
        col = draw(st.integers(0, len(lines[i]) if lines else 0))
        lines[i] = lines[i][:col] + draw(BROKEN_BITS) + lines[i][col:]
    elif kind == "bytes":
        return draw(st.binary(max_size=200)).decode("latin-1") if draw(st.booleans()) else text + "\x00\x01"
    elif kind == "bom":
        return "\ufeff" + text
    elif kind == "tabs":
        return "\n".join(re.sub(r"^( {2})+", lambda m: "\t" * (len(m.group(0)) // 2), ln) for ln in lines)
    elif kind == "anchors":
        return text + "\nx_anchor: &a {k: [1, 2]}\ny_alias: *a\nz_merge: {<<: *a, k: 3}\nw_self: &s [*s]\n"
    elif kind == "alias_bomb":
        bomb = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        bomb += [f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, 10)]
        return ("\n".join(bomb) + "\n" + text) if draw(st.booleans()) else "\n".join(bomb) + "\n"
    elif kind == "deep":
        depth = draw(st.sampled_from([50, 200, 1000, 5000, 20000]))
        style = draw(st.sampled_from(["flow_seq", "flow_map", "block"]))
        if style == "flow_seq":
            nest = "[" * depth + "]" * depth
        elif style == "flow_map":
            nest = "{a: " * depth + "1" + "}" * depth
        else:
            depth = min(depth, 1000)
            nest = "\n".join(" " * k + "k:" for k in range(depth)) + " 1"
        return text + "\ndeep: " + nest + "\n" if style != "block" else text + "\n" + nest + "\n"
    elif kind == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    elif kind == "crlf":
        return text.replace("\n", "\r\n")
    elif kind == "empty":
        return draw(st.sampled_from(["", " ", "\n\n", "# only a comment\n", "---\n...\n", "--- a\n--- b\n"]))
    elif kind == "top_scalar":
        return draw(st.sampled_from(["42", "- a\n- b\n", "just text", "null", "[1, 2", "!!set {a, b}"]))
    return "\n".join(lines)


@st.composite
def mutated_package(draw, base: SourcePackage, mutations: int = 3) -> SourcePackage:
    """``base`` with 1..``mutations`` files mutated (or added/removed)."""
    files = dict(base.files)
    editable = sorted(p for p in files if p.endswith((".yaml", ".yml", ".j2")) and not p.startswith("seed/"))
    for _ in range(draw(st.integers(1, mutations))):
        action = draw(st.sampled_from(["mutate"] * 8 + ["add", "remove", "raw"]))
        path = draw(st.sampled_from(editable))
        if action == "remove" and path in files:
            del files[path]
        elif action == "add":
            folder = draw(st.sampled_from(["forms", "flows", "rules", "reports", "templates"]))
            ext = ".j2" if folder == "templates" else ".yaml"
            donor = files.get(path, b"name: x\n").decode("utf-8", "replace")
            files[f"{folder}/{draw(IDENT)}{ext}"] = draw(mutate_text(donor)).encode("utf-8", "surrogatepass")
        elif action == "raw":
            files[path] = draw(st.binary(max_size=300))
        else:
            current = files.get(path, b"").decode("utf-8", "replace")
            files[path] = draw(mutate_text(current)).encode("utf-8", "surrogatepass")
    return SourcePackage(files, "<fuzz>")


# ---------------------------------------------------------------------------
# structured strategies: definitions built from scratch

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                    st.text(max_size=20), IDENT)
FIELD_TYPES = st.sampled_from(["text", "textarea", "number", "money", "date", "datetime", "select", "multiselect",
                               "link", "user", "phone", "email", "formula", "lookup", "auto_number", "child_table",
                               "attachment", "address", "boolean", "vin", "plate", "rating", "nonsense"])
FIELD_KEYS = st.sampled_from(["type", "label", "required", "options", "form", "formula", "via", "field", "default",
                              "min", "max", "max_length", "pii", "unique", "readonly", "required_when", "visible_when",
                              "pattern", "format", "store", "bogus"])
EXPRESSIONS = st.one_of(st.sampled_from(["today()", "len(name) > 2", "a.b.c", "x ==", "days_between(a, b)",
                                         "'s' * 10**9", "(((((((1)))))))", "__import__('os')", "[].__class__",
                                         "1 if x else", "not", "f(" * 200 + ")" * 200]), st.text(max_size=30))


def _field():
    return st.dictionaries(FIELD_KEYS, st.one_of(SCALARS, FIELD_TYPES, EXPRESSIONS,
                                                 st.lists(SCALARS, max_size=3)), max_size=5)


FORMS = st.fixed_dictionaries(
    {"fields": st.one_of(st.dictionaries(IDENT, _field(), max_size=5), SCALARS, st.lists(SCALARS, max_size=2))},
    optional={"name": st.one_of(IDENT, SCALARS), "label": st.one_of(SCALARS, st.dictionaries(
        st.sampled_from(["zh", "en", "fr"]), SCALARS, max_size=3)),
        "title_field": IDENT, "validations": st.lists(st.dictionaries(
            st.sampled_from(["rule", "field", "message", "when"]), st.one_of(EXPRESSIONS, SCALARS)), max_size=2),
        "access": st.lists(st.dictionaries(st.sampled_from(["roles", "actions", "rows", "fields"]),
                                           st.one_of(SCALARS, st.lists(IDENT, max_size=2), EXPRESSIONS)), max_size=2),
        "list": st.dictionaries(st.sampled_from(["columns", "search", "order"]), st.lists(IDENT, max_size=3))})
APP = st.fixed_dictionaries(
    {"name": st.one_of(IDENT, SCALARS), "version": st.one_of(SCALARS, st.just("1.0.0"))},
    optional={"timezone": st.one_of(st.sampled_from(["UTC", "Asia/Shanghai", "Mars/Base", "../../etc", ""]), SCALARS),
              "roles": st.one_of(st.dictionaries(IDENT, st.dictionaries(st.sampled_from(["label", "permissions"]),
                                                                         st.one_of(SCALARS, st.lists(IDENT))),
                                                 max_size=3), SCALARS),
              "menus": st.lists(st.dictionaries(st.sampled_from(["label", "form", "report", "dashboard", "roles"]),
                                                st.one_of(SCALARS, st.lists(SCALARS, max_size=2))), max_size=3),
              "home": st.one_of(st.dictionaries(IDENT, st.lists(st.dictionaries(IDENT, SCALARS, max_size=2),
                                                                 max_size=2), max_size=2), SCALARS),
              "title": st.one_of(SCALARS, st.dictionaries(st.sampled_from(["zh", "en"]), SCALARS))})
RECURSIVE = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                         st.dictionaries(st.one_of(IDENT, st.text(max_size=5)),
                                                                         kids, max_size=4)), max_leaves=25)


def _dump(data) -> bytes:
    import yaml
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8", "surrogatepass")


@st.composite
def structured_package(draw) -> SourcePackage:
    files = {"app.yaml": _dump(draw(st.one_of(APP, RECURSIVE)))}
    for k in range(draw(st.integers(0, 3))):
        files[f"forms/f{k}.yaml"] = _dump(draw(st.one_of(FORMS, RECURSIVE)))
    for folder in draw(st.lists(st.sampled_from(["flows", "rules", "reports"]), max_size=2, unique=True)):
        files[f"{folder}/x.yaml"] = _dump(draw(RECURSIVE))
    return SourcePackage(files, "<fuzz>")


# ---------------------------------------------------------------------------
# the properties

@examples(ci=120)
@given(mutated_package(MINI))
def test_mutated_mini_app_never_crashes_validate(package):
    assert_well_formed(package)


@examples(ci=12)   # the CRM takes ~1 s to validate (72 templates parsed)
@given(mutated_package(CRM_PKG, mutations=2))
def test_mutated_crm_never_crashes_validate(package):
    assert_well_formed(package)


@examples(ci=60)
@given(structured_package())
def test_structured_definitions_never_crash_validate(package):
    assert_well_formed(package)


@examples(ci=25)
@given(st.one_of(st.binary(max_size=400),
                 mutated_package(MINI, mutations=1).map(lambda p: _corrupt(p.to_zip()))))
def test_hostile_zip_bytes_are_refused_or_validated(blob):
    """An upload that is not a readable package is a PackageError, never a crash."""
    try:
        package = read_package(blob)
    except PackageError as exc:
        assert str(exc).strip()
        return
    assert_well_formed(package)


def _corrupt(blob: bytes) -> bytes:
    """Flip a few bytes in the middle of a zip (headers stay, data breaks)."""
    middle = len(blob) // 2
    return blob[:middle] + bytes(b ^ 0x5A for b in blob[middle:middle + 8]) + blob[middle + 8:]


# ---------------------------------------------------------------------------
# the CLI: exit code 0 for OK, 1 for problems, a message and no traceback

def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ui.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_cli_exit_codes_for_clean_and_broken_packages(tmp_path):
    ok = _cli("validate", str(FIXTURES / "mini_app"))
    assert ok.returncode == 0 and ok.stdout.startswith("OK mini 1.0.0"), ok.stderr

    bomb = dict(MINI.files)
    bomb["forms/ticket.yaml"] = ("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "\n".join(
        f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, 10)) + "\n").encode()
    bomb["forms/customer.yaml"] = b"\xff\xfe" + "deep: ".encode() + b"[" * 5000 + b"]" * 5000
    path = tmp_path / "bad.zip"
    path.write_bytes(SourcePackage(bomb, "bad").to_zip())
    bad = _cli("validate", str(path))
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert lines and all(re.match(r"^[^:]+:\d+:\d+: \S", ln) for ln in lines), lines

    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"PK\x03\x04garbage")
    res = _cli("validate", str(not_zip))
    assert res.returncode == 1 and "Traceback" not in res.stderr and res.stderr.strip()


# ---------------------------------------------------------------------------
# regressions: each crash fuzzing found, pinned with its exact answer

def _with(path: str, content: str | bytes) -> SourcePackage:
    files = dict(MINI.files)
    files[path] = content.encode("utf-8") if isinstance(content, str) else content
    return SourcePackage(files, "<regression>")


def _only(package: SourcePackage) -> str:
    problems = assert_well_formed(package)
    assert len(problems) == 1, problems
    return str(problems[0])


LAUGHS = ("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
          + "\n".join(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, 10)) + "\n")


def test_billion_laughs_is_refused_quickly():
    # was: expanded 9^9 values (hang, then out of memory)
    assert "aliases (*name) expand to too much data" in _only(_with("forms/ticket.yaml", LAUGHS))


def test_self_referencing_alias_is_refused():
    # was: RecursionError
    assert _only(_with("forms/ticket.yaml", "fields: &s {a: *s}\n")).startswith("forms/ticket.yaml:1:")


@pytest.mark.parametrize("nest", ["[" * 100_000 + "]" * 100_000, "{a: " * 5000 + "1" + "}" * 5000,
                                  "\n" + "".join("- " * 3000) + "x", "[" * 65 + "]" * 65])
def test_deep_nesting_is_refused_with_position(nest):
    # was: RecursionError, seconds of work at 20k levels, a segfault in libyaml at 100k
    out = _only(_with("forms/ticket.yaml", "fields: " + nest + "\n"))
    assert "nest more than 64 levels deep" in out and out.startswith("forms/ticket.yaml:")


def test_integer_with_thousands_of_digits_is_a_problem_not_a_crash():
    # was: ValueError "Exceeds the limit (4300 digits) for integer string conversion"
    out = _only(_with("forms/ticket.yaml", "name: ticket\nfields:\n  a: {type: number, min: " + "9" * 5000 + "}\n"))
    assert out == "forms/ticket.yaml:3:26: YAML error: number with 5000 digits is too large; quote it if it is text"


def test_control_character_is_one_line_with_its_position():
    # was: a three-line message ("... in '<unicode string>', position 23") at 1:1
    out = _only(_with("forms/ticket.yaml", "name: ticket\nfields: \x00\n"))
    assert out.startswith("forms/ticket.yaml:2:9: YAML error: unacceptable character #x0000")


def test_newline_inside_a_quoted_value_stays_on_one_problem_line():
    problems = assert_well_formed(_with("forms/ticket.yaml", 'name: ticket\nfields:\n  "a\\nb": {type: text}\n'))
    assert problems and all("\n" not in str(p) for p in problems)


@pytest.mark.parametrize("app_yaml", [
    "name: mini\nversion: 1\nroles: true\nmenus: [{form: customer, roles: 1.5}]\n",   # was: TypeError
    "name: mini\nversion: 1\nmenus: [{form: [a, b]}]\nhome: just text\n",           # was: unhashable list
    "name: mini\nversion: 1\nhome: {admin: 7}\nroles: {admin: {}}\n",
    "name: mini\nversion: 1\ntimezone: " + "x" * 5000 + "\n",
])
def test_wrongly_shaped_app_yaml_gets_schema_problems_not_a_crash(app_yaml):
    assert assert_well_formed(_with("app.yaml", app_yaml))


def test_wrong_shape_inside_a_form_reports_the_schema_problem():
    # was: AttributeError in the forms step ('float' has no .get) after the schema had objected
    src = MINI.text("forms/ticket.yaml").replace("message: {zh: 主题至少3个字, en: Subject needs at least 3 characters}",
                                                 "message: 1.5")
    out = [str(p) for p in assert_well_formed(_with("forms/ticket.yaml", src))]
    assert out and all(o.startswith("forms/ticket.yaml:") for o in out), out


def test_package_without_app_yaml_says_so():
    files = {k: v for k, v in MINI.files.items() if k != "app.yaml"}
    assert [str(p) for p in validate_package(SourcePackage(files, "x"))] == ["app.yaml:1:1: app.yaml is missing"]


def test_damaged_zip_member_is_a_package_error():
    # was: zlib.error "invalid distance too far back" escaping read_package
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("app.yaml", "name: mini\nversion: 1\n" * 50)
    blob = bytearray(buf.getvalue())
    start = blob.index(b"app.yaml") + len(b"app.yaml")   # first member's data follows its name
    for k in range(start + 2, start + 12):
        blob[k] ^= 0xFF
    with pytest.raises(PackageError, match="cannot be read|not a valid"):
        read_package(bytes(blob))
