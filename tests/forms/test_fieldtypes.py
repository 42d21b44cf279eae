"""The field-type registry: every type parses, refuses, stores, serialises and shows values.

Pure unit tests, except ``test_column_round_trip`` / ``test_json_filters``,
which create a table on SQLite in memory and, when ``LOOM_TEST_PG_URL`` is
set, on PostgreSQL (skipped without it unless ``LOOM_REQUIRE_PG=1``).
"""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import os
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from jsonschema import Draft202012Validator

from forms.fieldtypes import FIELD_TYPES, FieldType, FieldValueError, get_type, render_pattern, sequence_key
from forms.fieldtypes.text import _Sanitiser, sanitize_html
from tests.forms.test_cn_validators import make_id, make_vin

ROOT = Path(__file__).resolve().parents[2]
SH = ZoneInfo("Asia/Shanghai")
D = decimal.Decimal
UTC = dt.timezone.utc

ID_NUMBER = make_id("440305", "19880412", "123")
VIN = make_vin("LSVAU2180N2183294")
BAD_VIN = VIN[:8] + ("1" if VIN[8] != "1" else "2") + VIN[9:]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
SIGNATURE = "data:image/png;base64," + base64.b64encode(PNG).decode()
FILE = {"id": "f_01", "name": "合同.pdf", "size": 123456, "content_type": "application/pdf", "path": "2026/11/f_01.pdf"}
PHOTO = {"id": 7, "name": "front.jpg", "size": 2 * 1024 * 1024, "content_type": "image/jpeg", "path": "2026/11/7.jpg"}
TREE = [
    {"value": "广东省", "label": {"zh": "广东省", "en": "Guangdong"}, "children": [
        {"value": "深圳市", "label": {"zh": "深圳市", "en": "Shenzhen"}, "children": [
            {"value": "南山区", "label": {"zh": "南山区", "en": "Nanshan"}},
            {"value": "福田区", "label": {"zh": "福田区", "en": "Futian"}}]},
        {"value": "珠海市", "label": {"zh": "珠海市", "en": "Zhuhai"}}]},
    {"value": "上海市", "label": {"zh": "上海市", "en": "Shanghai"}, "children": [
        {"value": "上海市", "label": {"zh": "上海市", "en": "Shanghai"}, "children": [
            {"value": "浦东新区", "label": {"zh": "浦东新区", "en": "Pudong"}}]}]},
]
SOURCE_OPTIONS = [{"value": "website", "label": {"zh": "官网", "en": "Website"}},
                  {"value": "hotline_400", "label": {"zh": "400热线", "en": "400 hotline"}},
                  {"value": "referral", "label": {"zh": "转介绍", "en": "Referral"}}]

# name -> (spec, [(raw, canonical)...], [(raw, error code)...]).  Valid inputs include the
# string forms an HTML form / CSV / Excel cell delivers.
CASES: dict[str, tuple[dict, list, list]] = {
    "text": ({"max_length": 10}, [(" 张三 ", "张三"), ("a\nb", "a b"), (1001, "1001"), (1001.0, "1001")],
             [("x" * 11, "too_long"), ({"a": 1}, "invalid_text"), ("a\x00b", "invalid_text")]),
    "textarea": ({"max_length": 20}, [("line 1\r\nline 2", "line 1\nline 2")], [("y" * 21, "too_long")]),
    "rich_text": ({}, [("<p>Hi <b>there</b></p>", "<p>Hi <b>there</b></p>")], [(["<p>"], "invalid_text")]),
    "number": ({"min": 0, "max": 100}, [("42", 42), (42, 42), ("１００", 100), (7.0, 7)],
               [("12.5", "not_integer"), ("abc", "invalid_number"), ("-1", "min"), ("101", "max"), (True, "invalid_number")]),
    "decimal": ({"precision": 6, "scale": 2}, [("1234.5", D("1234.50")), (3.1, D("3.10")), ("-0.01", D("-0.01"))],
                [("1.234", "too_many_decimals"), ("12345.6", "too_many_digits"), ("1..2", "invalid_number")]),
    "currency": ({"currency": "CNY", "min": 0}, [("¥1,234.50", D("1234.50")), ("15万", D("150000.00")), ("99元", D("99.00")),
                                                  (0, D("0.00"))],
                 [("$12", "currency_mismatch"), ("-1", "min"), ("12.345", "too_many_decimals"), ("lots", "invalid_number")]),
    "percent": ({}, [("12.5%", D("12.50")), (80, D("80.00"))], [("1.234%", "too_many_decimals"), ("x%", "invalid_number")]),
    "rating": ({"min": 1, "max": 5}, [("4", 4), (5, 5), ("★★★☆☆", 3)], [("6", "max"), (0, "min"), ("3.5", "not_integer")]),
    "slider": ({"min": 0, "max": 10, "step": 0.5}, [("2.5", D("2.5")), (10, D("10.0"))],
               [("2.3", "step"), ("11", "max"), ("-1", "min"), ("many", "invalid_number")]),
    "boolean": ({}, [("on", True), ("是", True), ("否", False), ("0", False), (True, True), ("false", False)],
                [("maybe", "invalid_boolean"), (2, "invalid_boolean")]),
    "date": ({"min": "2020-01-01"}, [("2026-11-23", dt.date(2026, 11, 23)), ("2026/1/5", dt.date(2026, 1, 5)),
                                     ("2026年11月23日", dt.date(2026, 11, 23)), (dt.datetime(2026, 11, 23, 8), dt.date(2026, 11, 23))],
             [("2026-02-30", "invalid_date"), ("next week", "invalid_date"), ("2019-12-31", "min")]),
    "time": ({}, [("18:30", dt.time(18, 30)), ("9:05:30", dt.time(9, 5, 30)), ("下午3点", dt.time(15, 0))],
             [("25:00", "invalid_time"), ("noon-ish", "invalid_time")]),
    "datetime": ({"_tz": SH}, [("2026-11-23 18:30", dt.datetime(2026, 11, 23, 10, 30, tzinfo=UTC)),
                               ("2026-11-23T18:30", dt.datetime(2026, 11, 23, 10, 30, tzinfo=UTC)),       # <input type=datetime-local>
                               ("2026-11-23T10:30:00Z", dt.datetime(2026, 11, 23, 10, 30, tzinfo=UTC)),
                               ("2026-11-23T12:30:00+02:00", dt.datetime(2026, 11, 23, 10, 30, tzinfo=UTC))],
                 [("23/11/2026 noon", "invalid_datetime"), ("2026-13-01 10:00", "invalid_datetime")]),
    "duration": ({}, [("1h30m", 5400), ("90m", 5400), (5400, 5400), ("5400", 5400), ("1小时30分", 5400), ("PT1H30M", 5400),
                      ("1:30", 5400), ("2d", 172800)],
                 [("soon", "invalid_duration"), ("-5", "min"), ("1x", "invalid_duration")]),
    "select": ({"options": SOURCE_OPTIONS}, [("website", "website"), ("官网", "website"), ("400 Hotline", "hotline_400")],
               [("tv", "invalid_option"), (["website", "referral"], "invalid_option")]),
    "multi_select": ({"options": SOURCE_OPTIONS, "max": 2}, [(["referral", "website", "website"], ["website", "referral"]),
                                                              ("官网,转介绍", ["website", "referral"]),
                                                              ('["hotline_400"]', ["hotline_400"])],
                     [(["website", "tv"], "invalid_option"), (["website", "referral", "hotline_400"], "too_many")]),
    "radio": ({"options": ["east", "south", "north"]}, [("south", "south"), ("NORTH", "north")], [("west", "invalid_option")]),
    "checkbox_group": ({"options": [1, 2, 3]}, [(["3", "1"], [1, 3]), ("2", [2])], [(["4"], "invalid_option")]),
    "cascade": ({"options_file": "data/regions.yaml", "_options_tree": TREE, "levels": [{"zh": "省份", "en": "Province"}, {"zh": "城市", "en": "City"},
                                                   {"zh": "区县", "en": "District"}]},
                [(["广东省", "深圳市", "南山区"], ["广东省", "深圳市", "南山区"]), ("广东/深圳/福田区", ["广东省", "深圳市", "福田区"]),
                 (["Guangdong", "Zhuhai"], ["广东省", "珠海市"])],
                [(["广东省", "东京"], "invalid_option"), (["广东省", "深圳市"], "incomplete"), (["a", "b", "c", "d"], "too_deep")]),
    "phone": ({}, [("13800138000", "13800138000"), ("+86 138-0013-8000", "13800138000"), (13800138000.0, "13800138000"),
                   ("021-58880000", "021-58880000"), ("+85291234567", "+85291234567")],
              [("1380013800", "invalid_phone"), ("12800138000", "invalid_phone"), ("call me", "invalid_phone")]),
    "email": ({}, [(" Li.Lei@Example.COM ", "li.lei@example.com"), ("mailto:a.b+crm@qq.com", "a.b+crm@qq.com")],
              [("li.lei@", "invalid_email"), ("a@b", "invalid_email"), ("x@qq,com", "invalid_email"), ("a b@x.com", "invalid_email")]),
    "url": ({}, [("https://loom.dev/a?b=1", "https://loom.dev/a?b=1"), ("www.example.com", "https://www.example.com"),
                 ("HTTP://Example.com/Path", "http://example.com/Path")],
            [("javascript:alert(1)", "invalid_url"), ("ftp://x.com/f", "invalid_url"), ("not a url", "invalid_url")]),
    "id_card": ({}, [(ID_NUMBER, ID_NUMBER), (ID_NUMBER.lower(), ID_NUMBER)],
                [(ID_NUMBER[:17] + ("0" if ID_NUMBER[17] != "0" else "1"), "id_card_checksum"),
                 (make_id("110105", "19990230", "123"), "id_card_birth_date"), ("12345", "invalid_id_card"),
                 ("440305880412123", "id_card_legacy")]),
    "vin": ({}, [(VIN, VIN), (VIN.lower(), VIN)], [(BAD_VIN, "vin_checksum"), ("LSVAU2I80N2183294", "invalid_vin"), ("ABC", "invalid_vin")]),
    "license_plate": ({}, [("沪A12345", "沪A12345"), ("粤B·D12345", "粤BD12345"), ("京ad12345", "京AD12345"), ("川A1234学", "川A1234学")],
                      [("京A1234", "invalid_plate"), ("京AI2345", "invalid_plate"), ("AB12345", "invalid_plate")]),
    "address": ({}, [({"province": "广东省", "city": "深圳市", "district": "南山区", "detail": "科技园路1号"},
                      {"province": "广东省", "city": "深圳市", "district": "南山区", "detail": "科技园路1号"}),
                     ("浦东新区世纪大道100号", {"province": None, "city": None, "district": None, "detail": "浦东新区世纪大道100号"}),
                     ('{"city": "北京市", "detail": "长安街1号"}', {"province": None, "city": "北京市", "district": None, "detail": "长安街1号"})],
                [({"planet": "Mars"}, "invalid_address"), ({"detail": "x" * 201}, "too_long"), (42, "invalid_address")]),
    "geo_point": ({}, [({"lat": 31.2304, "lng": 121.4737}, {"lat": 31.2304, "lng": 121.4737}),
                       ("22.5431, 113.9344", {"lat": 22.5431, "lng": 113.9344})],
                  [({"lat": 91, "lng": 0}, "out_of_range"), ("somewhere", "invalid_geo"), ({"lat": "x", "lng": 1}, "invalid_geo")]),
    "user": ({}, [("li.lei", "li.lei"), ({"username": "wang_fang"}, "wang_fang")], [("li lei", "invalid_user"), (12, "invalid_user")]),
    "role": ({"roles": ["sales_consultant", "sales_manager"]}, [("sales_manager", "sales_manager")],
             [("admin", "invalid_role"), ("Sales Manager", "invalid_role")]),
    "link": ({"form": "dealer"}, [("12", 12), (12, 12), ({"id": 3, "name": "x"}, 3), (5.0, 5)],
             [("abc", "invalid_link"), (0, "invalid_link"), ("1.5", "invalid_link")]),
    "child_table": ({"form": "order_line", "max_rows": 2}, [([{"sku": "A"}], [{"sku": "A"}]), ('[{"sku": "B"}]', [{"sku": "B"}])],
                    [("x", "invalid_rows"), ([1, 2], "invalid_rows"), ([{}, {}, {}], "too_many_rows")]),
    "attachment": ({"multiple": True, "max_size": "1MB", "accept": ["application/pdf", ".docx"]},
                   [([FILE | {"size": 1000}], [FILE | {"size": 1000}]), (FILE | {"size": "2048"}, [FILE | {"size": 2048}])],
                   [(FILE | {"size": 2 * 1024 * 1024}, "file_too_large"), (FILE | {"size": 10, "content_type": "image/png", "name": "a.png"}, "file_type"),
                    ({"name": "a.pdf"}, "invalid_file"), (FILE | {"size": 1, "path": "../../etc/passwd"}, "invalid_file")]),
    "image": ({}, [(PHOTO, [PHOTO])], [(PHOTO | {"content_type": "image/svg+xml", "name": "x.svg"}, "file_type"),
                                       ([PHOTO, PHOTO | {"id": 8}], "too_many_files"), (PHOTO | {"size": 11 * 1024 * 1024}, "file_too_large")]),
    "signature": ({}, [(SIGNATURE, SIGNATURE)], [("data:image/jpeg;base64,AAAA", "invalid_signature"), ("scribble", "invalid_signature"),
                                                 ("data:image/png;base64," + base64.b64encode(PNG + bytes(210 * 1024)).decode(), "too_large")]),
    "formula": ({"formula": "price * qty", "result": "decimal"}, [(None, None), ("", None)], [("12", "readonly"), (12, "readonly")]),
    "lookup": ({"via": "customer", "field": "tier"}, [(None, None)], [("gold", "readonly")]),
    "auto_number": ({"pattern": "TS{YYYYMMDD}{####}"}, [("TS202611230001", "TS202611230001")],
                    [({"n": 1}, "invalid_number_text"), ("TS 1", "invalid_number_text")]),
    "tags": ({}, [("VIP, 老客户，vip、高意向", ["VIP", "老客户", "高意向"]), (["a", " a ", "b"], ["a", "b"]), ('["x"]', ["x"])],
             [([str(i) for i in range(21)], "too_many"), ("x" * 31, "too_long"), ([{"a": 1}], "invalid_tags")]),
    "json": ({}, [({"a": [1, 2, {"b": None}]}, {"a": [1, 2, {"b": None}]}), ('{"utm": "wx"}', {"utm": "wx"}), ("[1]", [1])],
             [("{not json", "invalid_json"), ({"x": "a" * 70000}, "too_large"), (float("nan"), "invalid_json")]),
}

ALL_WIDGETS = {"text", "textarea", "richtext", "number", "decimal", "money", "percent", "rating", "slider", "switch", "date", "time",
               "datetime", "duration", "select", "multiselect", "radio", "checkboxes", "cascade", "tel", "email", "url", "idcard",
               "vin", "plate", "address", "geo", "user", "role", "link", "child_table", "file", "image", "signature", "formula",
               "lookup", "autonumber", "tags", "json"}
ALL_OPS = {"eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "contains", "startswith", "empty"}


def valid_cases():
    for name, (spec, valid, _) in CASES.items():
        for i, (raw, expected) in enumerate(valid):
            yield pytest.param(name, spec, raw, expected, id=f"{name}-{i}")


def invalid_cases():
    for name, (spec, _, invalid) in CASES.items():
        for i, (raw, code) in enumerate(invalid):
            yield pytest.param(name, spec, raw, code, id=f"{name}-{code}-{i}")


# -- the registry -----------------------------------------------------------------------------

def test_registry_has_every_type_and_every_type_has_cases():
    assert len(FIELD_TYPES) >= 35
    assert set(CASES) == set(FIELD_TYPES)
    form_schema_types = set(__import__("json").loads((ROOT / "engine/schemas/form.schema.json").read_text("utf-8"))
                            ["$defs"]["field"]["properties"]["type"]["enum"])
    assert form_schema_types == set(FIELD_TYPES)


def test_every_key_a_field_type_takes_is_accepted_by_the_published_schema():
    # a key a type documents (formula's result, vin's check_digit...) must not be refused as unknown
    props = __import__("json").loads((ROOT / "engine/schemas/form.schema.json").read_text("utf-8"))["$defs"]["field"]["properties"]
    missing = {n: [k for k in t.definition_keys if k not in props] for n, t in FIELD_TYPES.items()}
    assert {n: ks for n, ks in missing.items() if ks} == {}


def test_a_formula_computing_a_code_reads_as_its_option_label():
    f = FIELD_TYPES["formula"]
    spec = {"formula": "'promoter'", "store": True, "result": "select",
            "options": [{"value": "promoter", "label": {"zh": "推荐者", "en": "Promoter"}}]}
    assert f.compute("promoter", spec) == "promoter" and f.compute("unknown", spec) is None
    assert f.format("promoter", spec, "zh") == "推荐者" and f.format("promoter", spec, "en") == "Promoter"
    assert f.to_json("promoter", spec) == "promoter"
    assert any("needs 'options'" in msg for _, msg in f.check_definition({"formula": "'a'", "result": "select"}))


def test_get_type():
    assert get_type("phone") is FIELD_TYPES["phone"]
    with pytest.raises(KeyError) as exc:
        get_type("phnoe")
    assert "did you mean 'phone'" in str(exc.value)


@pytest.mark.parametrize("name", sorted(FIELD_TYPES))
def test_type_metadata(name):
    t = FIELD_TYPES[name]
    assert isinstance(t, FieldType) and t.name == name
    assert t.label.get("zh") and t.label.get("en")
    assert t.widget in ALL_WIDGETS
    assert set(t.filter_ops) <= ALL_OPS
    Draft202012Validator.check_schema({"type": "object", "properties": t.definition_keys})
    spec = CASES[name][0]
    col = t.column_type(spec)
    if t.stored:
        assert isinstance(col, sa.types.TypeEngine)
    else:
        assert col is None
    Draft202012Validator.check_schema(t.json_schema(spec))
    assert t.check_definition(spec) == []


def test_unstored_and_readonly_types():
    assert {n for n, t in FIELD_TYPES.items() if not t.stored} == {"child_table", "lookup"}
    assert {n for n, t in FIELD_TYPES.items() if t.readonly} == {"formula", "lookup", "auto_number"}


# -- parse ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,spec,raw,expected", list(valid_cases()))
def test_valid_input(name, spec, raw, expected):
    t = FIELD_TYPES[name]
    value = t.parse(raw, dict(spec))
    assert value == expected
    if value is None:
        return
    # JSON is JSON-safe and matches the type's JSON Schema; parsing it again gives the same value
    out = t.to_json(value, spec)
    __import__("json").dumps(out, allow_nan=False)
    Draft202012Validator(t.json_schema(spec)).validate(out)
    if not t.readonly:
        assert t.parse(out, dict(spec)) == value
    assert isinstance(t.format(value, spec, "zh"), str)
    assert isinstance(t.format(value, spec, "en"), str)


@pytest.mark.parametrize("name,spec,raw,code", list(invalid_cases()))
def test_invalid_input(name, spec, raw, code):
    with pytest.raises(FieldValueError) as exc:
        FIELD_TYPES[name].parse(raw, dict(spec))
    assert exc.value.code == code
    assert exc.value.message.get("zh") and exc.value.message.get("en")
    assert exc.value.message["zh"] != exc.value.message["en"] or code == "pattern"
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("name", sorted(FIELD_TYPES))
@pytest.mark.parametrize("empty", [None, "", "   ", []])
def test_empty_input_is_none(name, empty):
    assert FIELD_TYPES[name].parse(empty, dict(CASES[name][0])) is None


@pytest.mark.parametrize("name", sorted(FIELD_TYPES))
def test_none_passes_through(name):
    t, spec = FIELD_TYPES[name], CASES[name][0]
    assert t.format(None, spec) == ""
    assert t.to_json(None, spec) is None
    Draft202012Validator(t.json_schema(spec)).validate(None)


def test_field_value_error_shape():
    err = FieldValueError("too_long", {"zh": "太长", "en": "Too long"})
    assert err.code == "too_long" and str(err) == "Too long" and err.text("zh") == "太长"
    import pickle
    again = pickle.loads(pickle.dumps(err))
    assert again.code == "too_long" and again.message == err.message


def test_text_pattern_and_pattern_message():
    spec = {"pattern": "^D[0-9]{3,6}$", "pattern_message": {"zh": "代码格式为 D + 3~6位数字", "en": "Format: D + 3-6 digits"}}
    assert FIELD_TYPES["text"].parse("D001", spec) == "D001"
    with pytest.raises(FieldValueError) as exc:
        FIELD_TYPES["text"].parse("X1", spec)
    assert exc.value.code == "pattern" and exc.value.message == {"zh": "代码格式为 D + 3~6位数字", "en": "Format: D + 3-6 digits"}
    with pytest.raises(FieldValueError) as exc:
        FIELD_TYPES["text"].parse("X1", {"pattern": "^D", "pattern_message": "Use D..."})
    assert exc.value.message == {"zh": "Use D...", "en": "Use D..."}
    with pytest.raises(FieldValueError) as exc:
        FIELD_TYPES["text"].parse("ab", {"min_length": 3})
    assert exc.value.code == "too_short"
    with pytest.raises(FieldValueError) as exc:
        FIELD_TYPES["textarea"].parse("abc", {"pattern": "^[0-9]+$"})
    assert exc.value.code == "pattern"


XSS = [
    '<script>alert(1)</script><p>ok</p>',
    '<img src=x onerror="alert(1)">',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt&colon;alert(1)">x</a>',
    '<a href="java\tscript:alert(1)">x</a>',
    '<p onclick="steal()" style="background:url(javascript:x)">t</p>',
    '<iframe src="https://evil"></iframe><svg onload=alert(1)><circle/></svg>',
    '<div><p>unclosed <b>bold',
    '<!-- comment --><style>p{}</style>',
]


@pytest.mark.parametrize("html_in", XSS)
@pytest.mark.parametrize("which", ["library", "fallback"])
def test_rich_text_sanitising(html_in, which):
    if which == "fallback":
        p = _Sanitiser()
        p.feed(html_in)
        out = p.result()
    else:
        out = sanitize_html(html_in)
    low = out.lower()
    for bad in ("<script", "onerror", "onclick", "onload", "javascript:", "<iframe", "<svg", "<style", "style=", "<!--"):
        assert bad not in low, (which, html_in, out)


def test_rich_text_keeps_formatting_and_counts_visible_text():
    t = FIELD_TYPES["rich_text"]
    value = t.parse('<h2>标题</h2><p>正文 <a href="https://loom.dev">链接</a></p><ul><li>一</li></ul><script>x</script>', {})
    assert "<h2>标题</h2>" in value and 'href="https://loom.dev"' in value and "<li>一</li>" in value and "script" not in value
    assert t.format(value, {}) == "标题 正文 链接 一"
    assert t.parse("<p>abc</p>", {"max_length": 3}) == "<p>abc</p>"           # tags do not count
    with pytest.raises(FieldValueError) as exc:
        t.parse("<p>abcd</p>", {"max_length": 3})
    assert exc.value.code == "too_long"
    assert t.parse("<p> </p><script>only script</script>", {}) is None


# -- numbers ------------------------------------------------------------------------------------

def test_decimal_values_and_json():
    t = FIELD_TYPES["currency"]
    v = t.parse("1234.5", {})
    assert isinstance(v, decimal.Decimal) and v == D("1234.50")
    assert t.to_json(v, {}) == "1234.50"
    assert t.format(v, {}) == "¥1,234.50"
    assert t.format(D("-5"), {}) == "-¥5.00"
    assert t.format(D("5"), {"currency": "USD"}) == "$5.00"
    assert t.parse("USD 12.5", {"currency": "USD"}) == D("12.50")
    assert t.column_type({}).compile(dialect=sa.dialects.postgresql.dialect()) == "NUMERIC(18, 2)"
    assert FIELD_TYPES["decimal"].column_type({"precision": 10, "scale": 4}).compile() == "NUMERIC(10, 4)"
    assert FIELD_TYPES["percent"].format(D("12.50"), {}) == "12.5%"
    assert FIELD_TYPES["number"].parse(1e3, {}) == 1000


def test_rating_and_slider():
    r = FIELD_TYPES["rating"]
    assert r.format(3, {}) == "★★★☆☆"
    assert r.format(7, {"max": 10}) == "★★★★★★★☆☆☆"
    assert r.parse("10", {"max": 10}) == 10
    s = FIELD_TYPES["slider"]
    assert s.parse("30", {}) == 30 and isinstance(s.parse("30", {}), int)
    assert isinstance(s.column_type({}), sa.Integer)
    assert isinstance(s.column_type({"step": 0.5}), sa.Numeric)
    with pytest.raises(FieldValueError) as exc:
        s.parse("33", {"min": 0, "max": 100, "step": 5})
    assert exc.value.code == "step"


# -- dates and times --------------------------------------------------------------------------

def test_datetime_zones_storage_and_display():
    t = FIELD_TYPES["datetime"]
    v = t.parse("2026-11-23 18:30", {"_tz": "Asia/Shanghai"})
    assert v == dt.datetime(2026, 11, 23, 10, 30, tzinfo=UTC) and v.tzinfo is not None
    stored = t.to_db(v, {})
    assert stored == dt.datetime(2026, 11, 23, 10, 30) and stored.tzinfo is None          # naive UTC
    assert t.from_db(stored, {}) == v
    assert t.to_json(v, {}) == "2026-11-23T10:30:00Z"
    assert t.format(v, {}, "zh", SH) == "2026-11-23 18:30"
    assert t.format(v, {"_tz": SH}) == "2026-11-23 18:30"
    assert t.format(v, {}, "en", ZoneInfo("Europe/Berlin")) == "2026-11-23 11:30"
    assert t.parse("2026-11-23 18:30", {}) == dt.datetime(2026, 11, 23, 18, 30, tzinfo=UTC)   # no zone given: UTC
    assert t.parse(dt.datetime(2026, 11, 23, 18, 30), {"_tz": SH}) == v                       # Excel cell: local wall time
    with pytest.raises(FieldValueError) as exc:
        t.parse("2026-11-23 18:30", {"_tz": SH, "max": "2026-11-23T00:00:00Z"})
    assert exc.value.code == "max" and "2026-11-23 08:00" in exc.value.message["zh"]


def test_date_bounds_relative_to_today():
    t = FIELD_TYPES["date"]
    today = dt.datetime.now(SH).date()
    assert t.parse(today.isoformat(), {"max": "today", "_tz": SH}) == today
    with pytest.raises(FieldValueError) as exc:
        t.parse((today + dt.timedelta(days=1)).isoformat(), {"max": "today", "_tz": SH})
    assert exc.value.code == "max"
    with pytest.raises(FieldValueError):
        t.parse((today - dt.timedelta(days=40)).isoformat(), {"min": "today-30d", "_tz": SH})
    assert t.parse("2026-11-23T20:00:00Z", {"_tz": SH}) == dt.date(2026, 11, 24)        # an instant -> the local date


def test_duration_format():
    t = FIELD_TYPES["duration"]
    assert t.format(5400, {}) == "1小时30分钟"
    assert t.format(5400, {}, "en") == "1h 30m"
    assert t.format(90061, {}, "en") == "1d 1h 1m 1s"
    with pytest.raises(FieldValueError) as exc:
        t.parse("45", {"min": "1m"})
    assert exc.value.code == "min"


# -- choices -------------------------------------------------------------------------------------

def test_choice_labels_and_columns():
    sel = FIELD_TYPES["select"]
    spec = {"options": SOURCE_OPTIONS}
    assert sel.format("website", spec, "zh") == "官网" and sel.format("website", spec, "en") == "Website"
    assert sel.format("removed_option", spec) == "removed_option"
    assert sel.json_schema(spec)["enum"] == ["website", "hotline_400", "referral", None]
    assert isinstance(sel.column_type({"options": [1, 2]}), sa.BigInteger)
    assert isinstance(sel.column_type(spec), sa.String)
    ms = FIELD_TYPES["multi_select"]
    assert ms.format(["website", "referral"], spec, "zh") == "官网、转介绍"
    assert ms.format(["website", "referral"], spec, "en") == "Website, Referral"
    assert FIELD_TYPES["boolean"].format(True, {}, "zh") == "是" and FIELD_TYPES["boolean"].format(False, {}, "en") == "No"
    c = FIELD_TYPES["cascade"]
    assert c.format(["广东省", "深圳市", "南山区"], {"_options_tree": TREE}, "en") == "Guangdong / Shenzhen / Nanshan"
    assert c.parse("江苏省/苏州市", {"levels": ["省", "市", "区"]}) == ["江苏省", "苏州市"]     # no tree: shape only


def test_identity_display():
    assert FIELD_TYPES["license_plate"].format("粤BD12345", {}) == "粤B·D12345"
    assert FIELD_TYPES["phone"].parse("021-58880000", {"kinds": ["landline"]}) == "021-58880000"
    with pytest.raises(FieldValueError) as exc:
        FIELD_TYPES["phone"].parse("021-58880000", {"kinds": ["mobile"]})
    assert exc.value.code == "invalid_phone" and "13800138000" in exc.value.message["zh"]
    assert FIELD_TYPES["id_card"].parse("440305880412123", {"allow_legacy": True}) == make_id("440305", "19880412", "123")
    assert FIELD_TYPES["vin"].parse(BAD_VIN, {"check_digit": False}) == BAD_VIN
    assert FIELD_TYPES["address"].format({"province": "北京市", "city": "北京市", "district": "朝阳区", "detail": "建国路1号"}, {}) \
        == "北京市朝阳区建国路1号"
    assert FIELD_TYPES["address"].format({"province": "广东省", "city": "深圳市", "district": None, "detail": "科技园"}, {}, "en") \
        == "科技园, 深圳市, 广东省"


# -- computed -------------------------------------------------------------------------------------

def test_auto_number_helpers():
    now = dt.datetime(2026, 11, 23, 18, 30, tzinfo=SH)
    assert render_pattern("TS{YYYYMMDD}{####}", now, 7) == "TS202611230007"
    assert sequence_key("TS{YYYYMMDD}{####}", now) == "TS20261123"
    assert render_pattern("C{YY}{MM}-{seq}", now, 12345) == "C2611-12345"
    assert sequence_key("C{YY}{MM}-{seq}", now) == "C2611-"
    assert render_pattern("{####}", now, 123456) == "123456"                   # never cut
    t = FIELD_TYPES["auto_number"]
    assert t.render_pattern("", now, 5) == "000005" and t.sequence_key("", now) == ""
    assert t.check_definition({"pattern": "TS{YYYYMMDD}{####}"}) == []
    assert t.check_definition({"pattern": "TS{YYYYMMDD}"})
    assert t.check_definition({"pattern": "TS{date}{####}"})


def test_formula_results():
    f = FIELD_TYPES["formula"]
    spec = {"formula": "price * qty", "result": "currency"}
    assert isinstance(f.column_type(spec), sa.Numeric)
    assert f.to_db(12.5, spec) == D("12.50")
    assert f.to_json(D("12.5"), spec) == "12.50"
    assert f.format(12.5, spec) == "¥12.50"
    assert f.compute("not a number", spec) is None
    plain = {"formula": "coalesce(plate, vin)"}
    assert isinstance(f.column_type(plain), sa.Text)
    assert f.to_db("沪A12345", plain) == "沪A12345" and f.to_db(True, plain) == "true"
    assert f.to_json(True, {"formula": "x", "store": False}) is True
    assert f.format(True, {"formula": "x"}) == "是"
    assert f.to_json(dt.datetime(2026, 1, 1, tzinfo=UTC), plain) == "2026-01-01T00:00:00Z"
    lk = FIELD_TYPES["lookup"]
    target = {"type": "select", "options": [{"value": "gold", "label": {"zh": "金卡", "en": "Gold"}}]}
    assert lk.format("gold", {"via": "customer", "field": "tier", "_target_spec": target}, "zh") == "金卡"
    assert lk.format("gold", {"via": "customer", "field": "tier"}) == "gold"
    assert lk.to_json(D("1.50"), {}) == "1.50"


# -- definition checks -----------------------------------------------------------------------------

@pytest.mark.parametrize("name,spec,path", [
    ("decimal", {"precision": 4, "scale": 6}, ("scale",)),
    ("number", {"min": 10, "max": 1}, ("min",)),
    ("number", {"min": "ten"}, ("min",)),
    ("date", {"min": "2026-13-01"}, ("min",)),
    ("text", {"pattern": "([a-z"}, ("pattern",)),
    ("text", {"min_length": 5, "max_length": 2}, ("min_length",)),
    ("select", {}, ()),
    ("select", {"options": ["a", "a"]}, ("options", 1)),
    ("select", {"options": [True, False]}, ("options", 0)),
    ("rating", {"max": 11}, ("max",)),
    ("slider", {"min": 5, "max": 1}, ("min",)),
    ("currency", {"currency": "rmb"}, ("currency",)),
    ("attachment", {"max_size": "lots"}, ("max_size",)),
    ("attachment", {"accept": ["pdf"]}, ("accept", 0)),
    ("image", {"accept": ["application/pdf"]}, ("accept", 0)),
    ("cascade", {}, ()),
    ("formula", {}, ()),
    ("formula", {"formula": "a", "result": "select"}, ("result",)),
    ("auto_number", {"pattern": "X{foo}{###}"}, ("pattern",)),
    ("phone", {"kinds": ["pager"]}, ("kinds", 0)),
    ("lookup", {"via": "customer"}, ()),
    ("child_table", {"form": "x", "min_rows": 3, "max_rows": 1}, ("min_rows",)),
])
def test_check_definition_problems(name, spec, path):
    problems = FIELD_TYPES[name].check_definition(spec)
    assert problems, f"{name} {spec} should be reported"
    assert path in [p for p, _ in problems]
    assert all(isinstance(msg, str) and msg for _, msg in problems)


def _yaml_forms():
    from ruamel.yaml import YAML
    yaml = YAML(typ="safe")
    for path in sorted(list(ROOT.glob("apps/*/forms/*.yaml")) + list(ROOT.glob("tests/fixtures/*/forms/*.yaml"))):
        data = yaml.load(path.read_text("utf-8")) or {}
        for fname, fspec in (data.get("fields") or {}).items():
            if isinstance(fspec, dict) and fspec.get("type") in FIELD_TYPES:
                yield f"{path.relative_to(ROOT)}:{fname}", fspec


def test_shipped_forms_pass_the_definition_checks():
    """The real packages' field definitions are accepted, and their defaults parse."""
    problems = []
    for where, fspec in _yaml_forms():
        t = FIELD_TYPES[fspec["type"]]
        problems += [f"{where} {p}: {m}" for p, m in t.check_definition(fspec)]
        if t.stored:
            assert t.column_type(fspec) is not None
    assert problems == []


# -- filters ---------------------------------------------------------------------------------------

def test_parse_filter():
    num = FIELD_TYPES["number"]
    assert num.parse_filter("gte", "10", {"min": 50}) == 10             # bounds do not apply to filters
    assert num.parse_filter("between", "10,20", {}) == (10, 20)
    assert num.parse_filter("in", "1,2,3", {}) == [1, 2, 3]
    assert num.parse_filter("empty", "1", {}) is True
    with pytest.raises(FieldValueError) as exc:
        num.parse_filter("contains", "1", {})
    assert exc.value.code == "bad_operator"
    with pytest.raises(FieldValueError) as exc:
        num.parse_filter("between", "10", {})
    assert exc.value.code == "invalid_range"
    with pytest.raises(FieldValueError) as exc:
        num.parse_filter("eq", "ten", {})
    assert exc.value.code == "invalid_number"
    assert FIELD_TYPES["phone"].parse_filter("eq", "+86 138 0013 8000", {}) == "13800138000"
    assert FIELD_TYPES["phone"].parse_filter("startswith", "138 0013", {}) == "1380013"
    assert FIELD_TYPES["license_plate"].parse_filter("eq", "粤b·d12345", {}) == "粤BD12345"
    assert FIELD_TYPES["select"].parse_filter("in", "官网,referral", {"options": SOURCE_OPTIONS}) == ["website", "referral"]
    assert FIELD_TYPES["date"].parse_filter("between", "2026-01-01,2026-03-31", {}) == (dt.date(2026, 1, 1), dt.date(2026, 3, 31))
    assert FIELD_TYPES["currency"].parse_filter("gt", "1万", {}) == D("10000.00")
    assert FIELD_TYPES["text"].parse_filter("contains", " 张 ", {"pattern": "^x$"}) == "张"
    dtt = FIELD_TYPES["datetime"]
    lo, hi = dtt.parse_filter("between", "2026-11-23,2026-11-23", {"_tz": SH})
    assert lo == dt.datetime(2026, 11, 22, 16, 0) and hi == dt.datetime(2026, 11, 23, 15, 59, 59, 999999)   # naive UTC
    assert dtt.parse_filter("gte", "2026-11-23T10:00:00Z", {}) == dt.datetime(2026, 11, 23, 10, 0)


def _engines():
    yield "sqlite"
    yield "postgresql"


def _engine(kind: str):
    if kind == "sqlite":
        return sa.create_engine("sqlite://")
    url = os.environ.get("LOOM_TEST_PG_URL")
    if not url:
        if os.environ.get("LOOM_REQUIRE_PG") == "1":
            pytest.fail("LOOM_REQUIRE_PG=1 but LOOM_TEST_PG_URL is not set")
        pytest.skip("PostgreSQL half skipped: set LOOM_TEST_PG_URL")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("LOOM_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    return engine


@pytest.fixture(params=list(_engines()))
def engine(request):
    eng = _engine(request.param)
    yield eng
    eng.dispose()


def _first_value(name):
    spec, valid, _ = CASES[name]
    for raw, expected in valid:
        if expected is not None:
            return spec, expected
    return spec, None


def test_column_round_trip(engine):
    """One table with a column of every stored type; one valid value each goes in and comes back."""
    md = sa.MetaData()
    stored = [n for n, t in FIELD_TYPES.items() if t.stored]
    table_name = f"ft_roundtrip_{uuid.uuid4().hex[:8]}"
    table = sa.Table(table_name, md, sa.Column("id", sa.Integer, primary_key=True),
                     *[sa.Column(f"f_{n}", FIELD_TYPES[n].column_type(CASES[n][0]), nullable=True) for n in stored])
    row, expected = {"id": 1}, {}
    for n in stored:
        spec, value = _first_value(n)
        if n == "formula":
            value = D("12.50")         # a computed result of the declared type (decimal)
        if n == "auto_number":
            value = FIELD_TYPES[n].render_pattern(spec["pattern"], dt.datetime(2026, 11, 23), 1)
        row[f"f_{n}"] = FIELD_TYPES[n].to_db(value, spec)
        expected[n] = value
    md.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(table.insert(), [row, {k: (2 if k == "id" else None) for k in row}])        # row 2: every field empty
        with engine.connect() as conn:
            got = conn.execute(sa.select(table).where(table.c.id == 1)).mappings().one()
            empty = conn.execute(sa.select(table).where(table.c.id == 2)).mappings().one()
            for n in stored:
                spec = CASES[n][0]
                back = FIELD_TYPES[n].from_db(got[f"f_{n}"], spec)
                assert back == expected[n], n
                assert FIELD_TYPES[n].to_json(back, spec) == FIELD_TYPES[n].to_json(expected[n], spec), n
                assert empty[f"f_{n}"] is None, n                  # empty is SQL NULL, also for JSON columns
            null_count = conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.f_tags.is_(None))).scalar()
            assert null_count == 1
    finally:
        md.drop_all(engine)


def test_json_filters(engine):
    """``filter_clause`` finds list elements in JSON columns on both backends (UTF-8 values too)."""
    md = sa.MetaData()
    tags, ms, cas, addr = (FIELD_TYPES[n] for n in ("tags", "multi_select", "cascade", "address"))
    ms_spec = {"options": SOURCE_OPTIONS}
    t = sa.Table(f"ft_filters_{uuid.uuid4().hex[:8]}", md, sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("tags", tags.column_type({})), sa.Column("src", ms.column_type(ms_spec)),
                 sa.Column("area", cas.column_type({})), sa.Column("addr", addr.column_type({})))
    rows = [
        {"id": 1, "tags": ["VIP", "老客户"], "src": ["website"], "area": ["广东省", "深圳市", "南山区"],
         "addr": addr.parse({"city": "深圳市", "detail": "科技园路1号"}, {})},
        {"id": 2, "tags": ["老客户_2"], "src": ["hotline_400", "referral"], "area": ["上海市", "上海市", "浦东新区"],
         "addr": addr.parse({"city": "上海市", "detail": "世纪大道100%"}, {})},
        {"id": 3, "tags": None, "src": None, "area": None, "addr": None},
    ]
    md.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(t.insert(), rows)

        def ids(ftype, col, op, raw, spec=None):
            spec = spec or {}
            value = ftype.parse_filter(op, raw, spec)
            clause = ftype.filter_clause(t.c[col], op, value, spec)
            with engine.connect() as conn:
                return sorted(r.id for r in conn.execute(sa.select(t.c.id).where(clause)))

        assert ids(tags, "tags", "contains", "老客户") == [1]          # not the element 老客户_2
        assert ids(tags, "tags", "contains", "VIP") == [1]
        assert ids(tags, "tags", "empty", "1") == [3]
        assert ids(tags, "tags", "empty", "0") == [1, 2]
        assert ids(ms, "src", "contains", "官网", ms_spec) == [1]
        assert ids(ms, "src", "contains", "referral", ms_spec) == [2]
        assert ids(ms, "src", "eq", "referral", ms_spec) == [2]
        assert ids(cas, "area", "contains", "深圳市") == [1]
        assert ids(cas, "area", "contains", "浦东新区") == [2]
        assert ids(addr, "addr", "contains", "科技园") == [1]
        assert ids(addr, "addr", "contains", "100%") == [2]            # LIKE wildcards are escaped
    finally:
        md.drop_all(engine)
