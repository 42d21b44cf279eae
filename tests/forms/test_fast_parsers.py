"""Compiled parsers (``FieldType.compile_parser``) behave exactly like ``parse``.

For every covered type and a range of field definitions, each input gives
the same canonical value (same type, same ``repr``: ``Decimal('1.50')`` is
not ``Decimal('1.5')``, aware datetimes keep their zone) or the same error
(same class, code, messages and params).  Hypothesis drives the inputs; a
table of tricky inputs (blanks, zero-width spaces, full-width digits,
separators, out of range, bad options, 是/否, lists...) pins the corner cases.
The parsers remember earlier results for some types, so one parser per case
is reused across all of its inputs.
"""
from __future__ import annotations

import datetime as dt
import decimal
import unicodedata
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forms.fieldtypes import FIELD_TYPES, FieldValueError
from forms.fieldtypes.base import ZERO_WIDTH, is_empty

D = decimal.Decimal
SH = ZoneInfo("Asia/Shanghai")
UTC = dt.timezone.utc
OPTIONS = ["low", "medium", "high", "critical"]
LABELLED = [{"value": "web", "label": {"zh": "官网", "en": "Website"}}, {"value": "phone", "label": "电话"},
            {"value": "Shop", "label": {"zh": "门店", "en": "Store"}}, "other"]
INT_OPTIONS = [1, 2, 3, 10]

CASES: list[tuple[str, dict]] = [
    ("text", {}),
    ("text", {"max_length": 10, "min_length": 2}),
    ("text", {"pattern": r"[A-Z]{2}\d{3}", "pattern_message": {"zh": "如 AB123", "en": "like AB123"}}),
    ("text", {"max_length": 5000}),
    ("textarea", {}),
    ("textarea", {"max_length": 12, "min_length": 3}),
    ("number", {}),
    ("number", {"min": 0, "max": 100}),
    ("number", {"min": "-5", "max": "1e3"}),
    ("decimal", {}),
    ("decimal", {"precision": 6, "scale": 3, "min": "-10.5", "max": 999}),
    ("decimal", {"scale": 0}),
    ("currency", {}),
    ("currency", {"currency": "USD", "min": 0, "max": 1000000}),
    ("currency", {"currency": "EUR", "scale": 0}),
    ("percent", {}),
    ("percent", {"min": 0, "max": 100, "scale": 1}),
    ("rating", {}),
    ("rating", {"min": 0, "max": 10}),
    ("select", {"options": OPTIONS}),
    ("select", {"options": LABELLED}),
    ("select", {"options": INT_OPTIONS}),
    ("radio", {"options": OPTIONS}),
    ("radio", {"options": LABELLED}),
    ("boolean", {}),
    ("date", {}),
    ("date", {"min": "2000-01-01", "max": "today+30d", "_tz": "Asia/Shanghai"}),
    ("date", {"min": dt.date(2026, 1, 1), "max": "2026-12-31"}),
    ("datetime", {}),
    ("datetime", {"_tz": "Asia/Shanghai"}),
    ("datetime", {"_tz": SH, "min": "2020-01-01 00:00", "max": "2030-12-31T23:59:59Z"}),
    ("datetime", {"_tz": "America/New_York", "min": "now-36500d"}),
    ("phone", {}),
    ("phone", {"kinds": ["mobile"]}),
    ("phone", {"kinds": ["landline", "service"]}),
    ("phone", {"region": "HK"}),
    ("email", {}),
    ("email", {"pattern": r".*@example\.com", "pattern_message": "只收公司邮箱"}),
    ("link", {"form": "customer"}),
    ("user", {}),
]

TRICKY = [
    None, "", " ", "   ", "\t", "\n", "\r\n", "\u3000", "\u200b", " \u200b ", "\ufeff", "\u00a0", "\x00", "\x1f", "\x7f",
    [], (), {}, [""], ["high"], ["high", "low"], ("low",), {"value": "high"}, {"id": 12}, {"username": "li.lei"},
    True, False, 0, 1, -1, 2, 5, 10, 11, 100, 101, -0.0, 0.0, 1.0, 1.5, 4.0, 80.0, 1e16, 1e23, 2.0 ** 53, -(2.0 ** 53),
    float("nan"), float("inf"), float("-inf"), D("1.50"), D("NaN"), D("1E+3"), D("-0"), 2 ** 63, 2 ** 63 - 1, -(2 ** 63),
    13800138000, 13800138000.0, 12345678901234567890,
    "0", "00", "007", "-0", "+5", "-5", "1", "5", "10", "100", "101", "1000", "1,234.50", "1，234.5", "1 234", "1_000",
    "1.", ".5", "1e3", "1E-2", "−3", "１２３", "１２３.５", " 42 ", "42\u200b", "4.0", "4.5", "1.234", "12.5%", "12.5 %",
    "１２.５％", "¥1,234.50", "￥1234.5", "$12", "US$12", "€5", "1234.5元", "15万", "2亿", "1.5万元", "USD 12", "12 USD",
    "99999999999999999999", "9" * 30, "1" * 25 + ".5", "-" + "9" * 17, "★★★", " ★★☆☆☆ ", "☆",
    "high", "High", "HIGH", " high", "high ", "medium", "critical", "urgent", "官网", "website", "Website", "WEB", "电话",
    "门店", "store", "shop", "Shop", "other", "1", "3", "10", "4", "Other",
    "是", "否", "true", "True", "TRUE", "false", "yes", "No", "y", "N", "on", "off", "t", "f", "√", "×", "对", "错", "真",
    "checked", "maybe", "１", "０",
    "2026-11-23", "2026/11/23", "2026.11.23", "20261123", "2026年11月23日", "２０２６-１１-２３", "2026-02-30", "2026-13-01",
    "2026-1-5", " 2026-11-23 ", "1899-12-31", "9999-01-01", "today", "Today", "today-1d", "now", "now+1d", "yesterday",
    "2026-11-23 18:30", "2026-11-23T18:30", "2026-11-23T10:30:00Z", "2026-11-23T10:30:00+08:00", "2026-11-23 18:30:15.5",
    "2026-11-23 下午3点", "2026-11-23 3:30 pm", "2026-11-23T25:00", "20261123T103000", "2026-11-23t10:30:00z",
    "1900-01-01 00:00", "9998-12-31 23:00", "0001-01-01", "2026-03-08 02:30",
    dt.date(2026, 11, 23), dt.date(1999, 1, 1), dt.datetime(2026, 11, 23, 18, 30), dt.datetime(2026, 11, 23, 10, 30, tzinfo=UTC),
    dt.datetime(2026, 11, 23, 10, 30, tzinfo=SH), dt.time(10, 30),
    "13800138000", "138 0013 8000", "138-0013-8000", "+86 138 0013 8000", "+8613800138000", "008613800138000",
    "8613800138000", "１３８００１３８０００", "13800138000\u200b", "tel:13800138000", "电话：13800138000", "12800138000",
    "1380013800", "021-58880000", "(021) 5888 0000", "021-58880000-123", "021-58880000转123", "02158880000",
    "400-820-8820", "4008208820", "95588", "10086", "+85291234567", "+44 20 7946 0958", "0044 20 7946 0958",
    "+1", "abc",
    "li.lei@example.com", "Li.Lei@Example.COM", " li@example.com ", "mailto:li@example.com", "<li@example.com>",
    "li@example", "li@@example.com", "@example.com", "li@", "li@ex_ample.com", "李雷@例子.中国", "li@例子.中国",
    "li@xn--fsqu00a.xn--fiqs8s", "a" * 65 + "@example.com", "li lei@example.com", "li@example.com\u200b", "ｌｉ@example.com",
    "li.lei", "li_lei-2@corp", "Li.Lei", "李雷", "li lei", "li/lei", "u" * 65, "#12", "12", "#", "0", "-3", "1.0",
    "工单1", "客户反映低速刹车有异响", "AB123", "ab123", "AB1234", "line1\nline2", "line1\r\nline2\r\n", "a\rb",
    " line1 \n\n line2 ", "x\u200by", "ｆｕｌｌ", "tab\there", "a" * 300, "b" * 11, "é", "e\u0301", "x\x00y", "\u2028",
]

_ALPHABET = ("0123456789-+.,eE :/年月日abcXyz@_#%$¥元万亿★☆是否\u200b\u3000\u00a0\n\r\t"
             "１２３４５６７８９０％＠ｌ，−")


def _dates():
    return st.dates(min_value=dt.date(1800, 1, 1), max_value=dt.date(9999, 12, 31))


RAW = st.one_of(
    st.sampled_from(TRICKY),
    st.none(), st.booleans(), st.integers(), st.integers(-200, 200),
    st.floats(), st.floats(-1e6, 1e6).map(lambda f: round(f, 2)),
    st.decimals(places=3, min_value=-10**6, max_value=10**6), st.decimals(),
    st.text(alphabet=_ALPHABET, max_size=16), st.text(max_size=8),
    st.from_regex(r"[+-]?[0-9]{1,22}(\.[0-9]{0,5})?", fullmatch=True),
    st.from_regex(r"1[0-9]{10}", fullmatch=True),
    st.from_regex(r"(\+86 ?)?1[3-9][0-9]{1,3}[ -]?[0-9]{4}[ -]?[0-9]{4}", fullmatch=True),
    st.from_regex(r"0[0-9]{2,3}-[0-9]{6,9}", fullmatch=True),
    st.from_regex(r"[a-z0-9._-]{0,10}@[a-z0-9-]{0,8}(\.[a-z]{1,4}){0,2}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._@-]{1,70}", fullmatch=True),
    st.sampled_from(OPTIONS + ["LOW", "官网", "Website", "1", "3", "10"]),
    _dates(), _dates().map(str), _dates().map(lambda d: d.strftime("%Y/%m/%d")),
    _dates().map(lambda d: d.strftime("%Y%m%d")),
    st.datetimes(min_value=dt.datetime(1800, 1, 1), max_value=dt.datetime(9999, 12, 30)),
    st.datetimes(min_value=dt.datetime(1800, 1, 1), max_value=dt.datetime(9999, 12, 30),
                 timezones=st.sampled_from([UTC, SH, dt.timezone(dt.timedelta(hours=-5))])),
    st.datetimes(min_value=dt.datetime(1800, 1, 1), max_value=dt.datetime(9999, 12, 30)).map(lambda d: d.isoformat(sep=" ")),
    st.datetimes(min_value=dt.datetime(1800, 1, 1), max_value=dt.datetime(9999, 12, 30)).map(lambda d: d.isoformat() + "Z"),
    st.lists(st.sampled_from(OPTIONS + ["", None, 1]), max_size=3),
)


def _outcome(fn, raw):
    try:
        value = fn(raw)
    except FieldValueError as exc:
        return ("error", type(exc), exc.code, exc.message, exc.params)
    except Exception as exc:  # noqa: BLE001 - other exceptions must match too
        return ("exception", type(exc), str(exc))
    return ("value", type(value), repr(value))


def assert_same(name: str, spec: dict, parser, raw) -> None:
    ftype = FIELD_TYPES[name]
    expected = _outcome(lambda r: ftype.parse(r, spec), raw)
    got = _outcome(parser, raw)
    assert got == expected, f"{name} {spec} {raw!r}: compiled {got} != parse {expected}"


def _case_id(case):
    name, spec = case
    return name + "-" + "-".join(f"{k}" for k in spec) if spec else name


PARSERS = {i: FIELD_TYPES[name].compile_parser(spec) for i, (name, spec) in enumerate(CASES)}


def test_every_listed_type_has_a_compiled_parser():
    from forms.fieldtypes.base import FieldType
    for name in {n for n, _ in CASES}:
        assert type(FIELD_TYPES[name]).compile_parser is not FieldType.compile_parser, name


@pytest.mark.parametrize("index", range(len(CASES)), ids=[_case_id(c) for c in CASES])
def test_tricky_inputs(index):
    name, spec = CASES[index]
    parser = PARSERS[index]
    for _ in range(2):          # the second round goes through anything remembered in the first
        for raw in TRICKY:
            assert_same(name, spec, parser, raw)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[_case_id(c) for c in CASES])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=RAW)
def test_property_same_as_parse(index, raw):
    name, spec = CASES[index]
    parser = PARSERS[index]
    assert_same(name, spec, parser, raw)
    assert_same(name, spec, parser, raw)      # again: memoised answers stay right


def test_default_compile_parser_is_parse():
    spec = {"kinds": ["mobile"]}
    parser = FIELD_TYPES["id_card"].compile_parser(spec)
    for raw in (None, "", "abc", "11010519491231002X"):
        assert_same("id_card", spec, parser, raw)


@pytest.mark.parametrize("name,spec", [
    ("number", {"min": "abc"}), ("decimal", {"max": "x"}), ("text", {"pattern": "("}), ("text", {"max_length": "many"}),
    ("rating", {"max": "ten"}), ("date", {"min": 5}), ("datetime", {"_tz": "Nowhere/Atlantis"}),
    ("phone", {"kinds": 3}), ("currency", {"currency": 123}), ("email", {"pattern": "["}),
])
def test_broken_definitions_fail_like_parse(name, spec):
    parser = FIELD_TYPES[name].compile_parser(spec)
    for raw in (None, "", "5", 5, "2026-11-23", "13800138000", "a@example.com", "x"):
        assert_same(name, spec, parser, raw)


def test_currency_whose_words_look_like_numbers_is_not_fast_pathed():
    spec = {"currency": "123"}     # invalid, but parse strips '123' as a symbol; the compiled parser must too
    parser = FIELD_TYPES["currency"].compile_parser(spec)
    for raw in ("1234.50", "123", "12399", 123, "-1235"):
        assert_same("currency", spec, parser, raw)


def test_is_empty_fast_path_matches_the_definition():
    def slow(raw):
        return raw.translate(ZERO_WIDTH).strip() == ""
    for cp in range(0x10000):
        c = chr(cp)
        if unicodedata.category(c) == "Cs":
            continue
        for s in (c, " " + c + " ", c + "x"):
            assert is_empty(s) == slow(s), repr(s)


def test_bulk_writer_uses_compiled_parsers():
    import inspect

    from forms import bulk
    source = inspect.getsource(bulk.BulkWriter)
    assert "compile_parser" in source and ".parse(" not in source
