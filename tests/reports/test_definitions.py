"""Report and dashboard definitions: problems reported with exact positions (no database)."""
from __future__ import annotations

import pytest

from engine.definitions import compile_package, validate_package
from engine.package import read_package
from tests.reports.conftest import FILES
from ui.wiring import load_engines

load_engines()


NO_MENUS = {"app.yaml": FILES["app.yaml"].split("menus:")[0]}


def problems(package_dir, reports_yaml: str, extra: dict | None = None) -> list[str]:
    """Problems of the test package with this reports file (app.yaml without menus unless ``extra`` gives one)."""
    files = dict(FILES, **NO_MENUS)
    files.update({"reports/sales.yaml": reports_yaml}, **(extra or {}))
    return [str(p) for p in validate_package(read_package(package_dir(files)))]


def pos(src: str, needle: str, nth: int = 0) -> str:
    """'line:col' (1-based) of the nth occurrence of needle."""
    start = -1
    for _ in range(nth + 1):
        start = src.index(needle, start + 1)
    line = src.count("\n", 0, start) + 1
    col = start - (src.rfind("\n", 0, start) + 1) + 1
    return f"{line}:{col}"


def test_test_package_is_clean(package_dir):
    app = compile_package(read_package(package_dir(FILES)))
    reports = app.section("reports")
    assert {"by_source", "lead_funnel", "service_return", "lead_kpi"} <= set(reports)
    assert set(app.section("dashboards")) == {"sales_board"}
    rd = reports["by_source"]
    assert [d.name for d in rd.dimensions] == ["source"]
    assert [m.name for m in rd.measures] == ["leads", "won", "amount", "avg_amount", "conversion"]
    assert rd.measure("conversion").ratio == ("won", "leads") and rd.measure("conversion").format == "percent"
    assert [p.name for p in rd.params] == ["period", "region"] and rd.params[0].kind == "period"


def test_funnel_stages_follow_the_workflow_up_to_its_first_final_state(package_dir):
    app = compile_package(read_package(package_dir(FILES)))
    f = app.section("reports")["flow_funnel"].funnel
    assert f.stages == ("new", "contacted", "test_drive", "won")
    assert f.labels["test_drive"] == {"zh": "试驾", "en": "Test drive"}


def test_unknown_field_in_dimension(package_dir):
    src = "reports:\n  - name: r\n    source: lead\n    dimensions: [sauce]\n    measures: {n: count}\n"
    out = problems(package_dir, src)
    assert len(out) == 1, out
    assert out[0].startswith(f"reports/sales.yaml:{pos(src, 'sauce')}: report 'r': unknown field 'sauce' in form 'lead'; did you mean 'source'?")


def test_unknown_linked_field_and_non_link(package_dir):
    src = ("reports:\n  - name: r\n    source: lead\n    dimensions: [dealer.regio, source.x]\n"
           "    measures: {n: count}\n")
    out = problems(package_dir, src)
    assert f"reports/sales.yaml:{pos(src, 'dealer.regio')}: report 'r': unknown field 'regio' in form 'dealer'; did you mean 'region'? (via 'dealer')" in out
    assert f"reports/sales.yaml:{pos(src, 'source.x')}: report 'r': 'source' is not a link field, so 'source.x' cannot be followed" in out


def test_unknown_measure_kind(package_dir):
    src = "reports:\n  - name: r\n    source: lead\n    measures:\n      n: cnt\n      total: {summ: amount}\n"
    out = problems(package_dir, src)
    assert any(p.startswith(f"reports/sales.yaml:{pos(src, 'cnt')}:") and "'cnt'" in p for p in out), out
    assert any(p.startswith(f"reports/sales.yaml:{pos(src, 'summ')}:") and "unknown key 'summ'; did you mean 'sum'?" in p for p in out), out


def test_pii_cannot_be_grouped_shown_or_filtered(package_dir):
    src = ("reports:\n  - name: r\n    source: lead\n    filters: [\"phone == '1'\"]\n    dimensions: [phone]\n"
           "    measures: {n: count, m: {max: phone}, d: {count_distinct: phone}}\n")
    out = problems(package_dir, src)
    assert f"reports/sales.yaml:{pos(src, 'phone', 1)}: report 'r': 'phone' is personal data (pii) and cannot be grouped or shown in a report" in out
    assert any(p.startswith(f"reports/sales.yaml:{pos(src, 'phone', 2)}:") and "personal data" in p for p in out), out
    assert any(p.startswith("reports/sales.yaml:4:") and "personal data" in p for p in out), out
    assert len(out) == 3, out          # count_distinct of a pii field is fine (blind index)


def test_bucket_only_on_dates_and_datetime_needs_bucket(package_dir):
    src = ("reports:\n  - name: r\n    source: lead\n    dimensions: [{field: source, bucket: month}, created_at,"
           " {field: created_at, bucket: fortnight}]\n")
    out = problems(package_dir, src)
    assert any("'source' is not a date or datetime field (select)" in p for p in out), out
    assert any(p.startswith(f"reports/sales.yaml:{pos(src, 'created_at')}:") and "group it by a bucket" in p for p in out), out
    assert any("fortnight" in p for p in out), out


def test_bad_expression_points_into_the_expression(package_dir):
    src = "reports:\n  - name: r\n    source: lead\n    filters: [\"in_pol == false\"]\n    measures: {n: count}\n"
    out = problems(package_dir, src)
    assert len(out) == 1 and "in_pol" in out[0] and "in_pool" in out[0], out
    assert out[0].startswith(f"reports/sales.yaml:{pos(src, 'in_pol')}:"), out


def test_ratio_chart_sort_and_role_references(package_dir):
    src = ("reports:\n  - name: r\n    source: lead\n    roles: [boss]\n    dimensions: [source]\n"
           "    measures: {n: count, c: {ratio: [won, n]}}\n    sort: [-nn]\n    chart: {kind: bars, x: source}\n")
    out = problems(package_dir, src)
    assert f"reports/sales.yaml:{pos(src, 'boss')}: report 'r': unknown role 'boss'; expected one of: admin, dealer_manager, dealer_user, manager" in out
    assert any(p.startswith(f"reports/sales.yaml:{pos(src, 'won')}:") and "unknown measure 'won'" in p for p in out), out
    assert any(p.startswith(f"reports/sales.yaml:{pos(src, '-nn')}:") and "cannot sort by 'nn'" in p for p in out), out
    assert any(p.startswith(f"reports/sales.yaml:{pos(src, 'bars')}:") and "did you mean 'bar'" in p for p in out), out


def test_formula_names_other_measures_only(package_dir):
    src = ("reports:\n  - name: r\n    source: lead\n    measures:\n      n: count\n"
           "      f: {formula: \"n * 100 / wonn\"}\n      g: {formula: \"h + 1\"}\n      h: {formula: \"g + 1\"}\n")
    out = problems(package_dir, src)
    assert any(p.startswith(f"reports/sales.yaml:{pos(src, 'wonn')}:") and "'wonn' is not another measure" in p for p in out), out
    assert any("depends on itself" in p for p in out), out


def test_chart_needs_matching_dimensions(package_dir):
    src = ("reports:\n  - name: r\n    source: lead\n    measures: {n: count}\n    chart: {kind: heatmap}\n"
           "  - name: k\n    kind: kpi\n    source: lead\n    dimensions: [source]\n    compare: previous_period\n")
    out = problems(package_dir, src)
    assert any("heatmap chart needs 2 dimension(s)" in p for p in out), out
    assert any("a KPI report has no dimensions" in p for p in out), out
    assert any("comparing with the previous period needs a date filter" in p for p in out), out


def test_a_kpi_says_which_way_is_good_with_higher_or_lower(package_dir):
    src = ("reports:\n  - name: k\n    kind: kpi\n    source: lead\n    measures: {n: count}\n"
           "    chart: {kind: kpi, y: n, better: sideways}\n")
    out = problems(package_dir, src)
    assert any(p.startswith(f"reports/sales.yaml:{pos(src, 'sideways')}:") and "higher" in p and "lower" in p for p in out), out
    assert problems(package_dir, src.replace("sideways", "lower")) == []
    bar = ("reports:\n  - name: b\n    source: lead\n    dimensions: [source]\n    measures: {n: count}\n"
           "    chart: {kind: bar, better: lower}\n")
    out = problems(package_dir, bar)
    assert any(p.startswith(f"reports/sales.yaml:{pos(bar, 'better')}:") and "use kind: kpi" in p for p in out), out


def test_dashboard_and_menu_references(package_dir):
    src = ("reports:\n  - name: r\n    source: lead\n    measures: {n: count}\n"
           "dashboards:\n  - name: sales_board\n    filters: [{param: perod}]\n    widgets:\n      - {report: rr, width: 13}\n")
    out = problems(package_dir, src, {"app.yaml": FILES["app.yaml"]})
    assert any(p.startswith(f"reports/sales.yaml:{pos(src, 'rr')}:") and "unknown report 'rr'; did you mean 'r'?" in p for p in out), out
    assert any("'width' is 13; maximum is 12" in p for p in out), out
    # app.yaml's menu names report 'by_source', which this file no longer defines
    assert any(p.startswith("app.yaml:") and "unknown report 'by_source'" in p for p in out), out


def test_cohort_checks(package_dir):
    src = ("reports:\n  - name: c\n    kind: cohort\n    source: vehicle\n    cohort:\n      date: vin\n"
           "      events: {form: service_order, link: vehicle, within: 3 months}\n")
    out = problems(package_dir, src)
    assert any("'vin' is not a date or datetime field" in p for p in out), out
    assert any("within" in p or "window" in p for p in out), out


def test_unknown_source_form_and_duplicate_names(package_dir):
    src = "reports:\n  - name: r\n    source: leed\n  - name: r\n    source: lead\n"
    out = problems(package_dir, src)
    assert any(p.startswith(f"reports/sales.yaml:{pos(src, 'leed')}:") and "unknown form 'leed'; did you mean 'lead'?" in p for p in out), out
    assert any("report 'r' is already defined" in p for p in out), out


def test_percentile_needs_p_and_param_defaults_are_checked(package_dir):
    src = ("reports:\n  - name: r\n    source: lead\n    filters: [{field: created_at, param: period, default: last_fortnight},"
           " {field: source, param: src, default: tv}]\n    measures: {p: {percentile: amount}}\n")
    out = problems(package_dir, src)
    assert any("last_fortnight" in p and "is not a period" in p for p in out), out
    assert any("'tv' is not an option of 'source'" in p for p in out), out
    assert any("a percentile needs p between 0 and 1" in p for p in out), out


@pytest.mark.parametrize("kind", ["bar", "stacked_bar", "line", "area", "pie", "donut", "funnel", "map", "table", "heatmap"])
def test_every_category_chart_kind_compiles(package_dir, kind):
    dims = "[dealer.region, source]" if kind in ("heatmap", "stacked_bar") else "[dealer.province]"
    src = f"reports:\n  - name: r\n    source: lead\n    dimensions: {dims}\n    measures: {{n: count}}\n    chart: {{kind: {kind}}}\n"
    assert problems(package_dir, src) == []
