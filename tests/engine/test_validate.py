"""`loom validate`: every class of definition problem, with its exact position."""
from __future__ import annotations

import shutil

import pytest

from engine.definitions import validate_package
from engine.package import read_package
from tests.conftest import FIXTURES
from ui.wiring import load_engines

load_engines()


def problems_for(tmp_path, edits: dict[str, str]) -> list[str]:
    root = tmp_path / "pkg"
    shutil.copytree(FIXTURES / "mini_app", root)
    for rel, content in edits.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content, encoding="utf-8")
    return [str(p) for p in validate_package(read_package(root))]


def test_fixture_app_is_clean(tmp_path):
    assert problems_for(tmp_path, {}) == []


def test_yaml_syntax_error_has_position(tmp_path):
    out = problems_for(tmp_path, {"forms/ticket.yaml": "name: ticket\nfields:\n  subject: {type: text\n"})
    assert len(out) == 1
    assert out[0].startswith("forms/ticket.yaml:4:1: YAML syntax error")


def test_duplicate_key_is_reported(tmp_path):
    out = problems_for(tmp_path, {"forms/ticket.yaml": "fields:\n  a: {type: text}\n  a: {type: text}\n"})
    assert out and out[0].startswith("forms/ticket.yaml:3:3:") and "duplicate key" in out[0]


def test_unknown_field_type_points_at_the_type(tmp_path):
    src = "name: ticket\nfields:\n  subject: {type: text}\n  owner_x:\n    type: usr\n"
    out = problems_for(tmp_path, {"forms/ticket.yaml": src})
    assert out == ["forms/ticket.yaml:5:11: field 'owner_x': unknown type 'usr'; did you mean 'user'?; "
                   + out[0].split("; ", 2)[2]]
    assert "expected one of: address, attachment" in out[0]


def test_unknown_key_with_suggestion(tmp_path):
    src = "fields:\n  subject: {type: text, lable: Subject}\n"
    out = problems_for(tmp_path, {"forms/ticket.yaml": src})
    assert out == ["forms/ticket.yaml:2:25: field 'subject': unknown key 'lable'; did you mean 'label'?"]


def test_missing_required_key(tmp_path):
    out = problems_for(tmp_path, {"forms/ticket.yaml": "name: ticket\nlabel: T\n"})
    assert out == ["forms/ticket.yaml:1:1: missing required key 'fields'"]


def test_wrong_value_type(tmp_path):
    out = problems_for(tmp_path, {"forms/ticket.yaml": "fields:\n  subject: {type: text, max_length: many}\n"})
    assert out == ["forms/ticket.yaml:2:37: field 'subject': 'max_length' must be a whole number, got 'many'"]


def test_link_to_unknown_form(tmp_path):
    src = "fields:\n  subject: {type: text}\n  customer: {type: link, form: custmer}\n"
    out = problems_for(tmp_path, {"forms/ticket.yaml": src})
    assert out == ["forms/ticket.yaml:3:32: field 'customer': unknown form 'custmer'; did you mean 'customer'?"]


def test_expression_syntax_error_points_inside_the_expression(tmp_path):
    src = 'fields:\n  subject: {type: text, required_when: "severity =="}\n  severity: {type: text}\n'
    out = problems_for(tmp_path, {"forms/ticket.yaml": src})
    assert len(out) == 1 and out[0].startswith("forms/ticket.yaml:2:")
    line, col = map(int, out[0].split(":")[1:3])
    assert col > 39, out  # inside the quoted expression, not at the key
    assert "severity ==" in out[0]


def test_expression_unknown_field_and_function(tmp_path):
    src = ('fields:\n  subject: {type: text}\n'
           '  a: {type: text, visible_when: "subjct == \'x\'"}\n'
           '  b: {type: date, default: "todya()"}\n')
    out = problems_for(tmp_path, {"forms/ticket.yaml": src})
    assert len(out) == 2
    assert out[0].startswith("forms/ticket.yaml:3:") and "unknown field 'subjct'" in out[0] and "did you mean 'subject'" in out[0]
    assert out[1].startswith("forms/ticket.yaml:4:") and "todya" in out[1] and "today" in out[1]


def test_unknown_role_in_access(tmp_path):
    src = "fields:\n  subject: {type: text}\naccess:\n  - roles: [agnet]\n    actions: [read]\n"
    out = problems_for(tmp_path, {"forms/ticket.yaml": src})
    assert out == ["forms/ticket.yaml:4:13: unknown role 'agnet'; did you mean 'agent'?"]


def test_unknown_list_column_and_menu_form(tmp_path):
    out = problems_for(tmp_path, {
        "forms/ticket.yaml": "fields:\n  subject: {type: text}\nlist:\n  columns: [subject, severty]\n",
        "app.yaml": (FIXTURES / "mini_app" / "app.yaml").read_text().replace("form: customer", "form: custom"),
    })
    assert any(p.startswith("forms/ticket.yaml:4:22: list column: unknown field 'severty'") for p in out), out
    assert any(p.startswith("app.yaml:") and "unknown form 'custom'" in p for p in out), out


def test_all_problems_at_once(tmp_path):
    out = problems_for(tmp_path, {
        "forms/ticket.yaml": "fields:\n  subject: {type: txt}\n  x: {type: link, form: nope}\n",
        "forms/customer.yaml": "fields:\n  name: {type: text, colour: red}\n",
    })
    files = {p.split(":")[0] for p in out}
    assert files == {"forms/ticket.yaml", "forms/customer.yaml"} and len(out) >= 3


def test_bad_timezone_and_version(tmp_path):
    app = (FIXTURES / "mini_app" / "app.yaml").read_text()
    app = app.replace("Asia/Shanghai", "Asia/Beijing").replace("1.0.0", "1.0")
    out = problems_for(tmp_path, {"app.yaml": app})
    assert any("'version' must be text, got the number 1.0" in p for p in out), out
    assert any("unknown timezone 'Asia/Beijing'" in p for p in out)


def test_system_column_cannot_be_redeclared(tmp_path):
    out = problems_for(tmp_path, {"forms/ticket.yaml": "fields:\n  owner: {type: text}\n"})
    assert out == ["forms/ticket.yaml:2:3: field 'owner' is a system column every record has "
                   "(id, created_at, updated_at, created_by, owner, state); remove it or choose another name"]


def test_not_a_package(tmp_path):
    from engine.package import PackageError
    with pytest.raises(PackageError, match="no app.yaml"):
        read_package(tmp_path)
