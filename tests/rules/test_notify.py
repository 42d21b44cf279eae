"""Notifications: recipients, channels, consent, quiet hours, frequency cap, idempotency; the template sandbox."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from engine.errors import LoomError
from tests.conftest import T0
from tests.rules.pkg import Session, add_user, outbox, rule_log, setup_app, tick

TEMPLATES = {
    "templates/survey_thanks.zh.j2": "{{ recipient.name }}，感谢评分{{ score }}（{{ dealer.name }}，{{ settings.brand }}）",
    "templates/survey_thanks.sms.zh.j2": "【Loom】{{ recipient.name }}，感谢评分{{ score }}",
    "templates/survey_thanks.en.j2": "Thanks {{ recipient.name }} for {{ score }} at {{ now|datetime('%H:%M') }}",
    "templates/manager_alert.zh.j2": "{% set subject = '低分预警' %}{{ customer.name }}评分{{ score }}，{{ recipient.display_name }}请处理",
    "templates/spring_sale.zh.j2": "{% set kind = 'marketing' %}{{ recipient.name }}，春季特惠！",
}

RULES = """
rules:
  - name: thank
    on: {created: survey}
    actions:
      - notify: {template: survey_thanks, to: customer}
  - name: alert
    on: {created: survey}
    when: "score < 3"
    actions:
      - notify: {template: manager_alert, to: {role: regional, where: "region == record.dealer.region"}}
  - name: promo
    on: {changed: customer, fields: [tier]}
    actions:
      - notify: {template: spring_sale, to: self, channel: "'sms'"}
"""


def _setup(rt, package_dir, **kw):
    setup_app(rt, package_dir, RULES, templates=TEMPLATES, **kw)
    s = Session(rt)
    d = s.create("dealer", {"code": "D1", "name": "浦东店", "region": "east"})
    return s, d


def test_recipients_channels_languages_and_rendering(rt, package_dir):
    s, d = _setup(rt, package_dir)
    add_user(rt, "rm_east", ["regional"], region="east")
    add_user(rt, "rm_south", ["regional"], region="south")
    zh = s.create("customer", {"name": "张三", "phone": "13800138000", "preferred_channel": "sms", "language": "zh"})
    en = s.create("customer", {"name": "Ann", "email": "ann@example.com", "preferred_channel": "email", "language": "en"})
    s.create("survey", {"customer": zh["id"], "dealer": d["id"], "score": 2})
    s.create("survey", {"customer": en["id"], "dealer": d["id"], "score": 5})
    msgs = outbox(rt)
    by = {(m["template"], m["recipient"]): m for m in msgs}
    sms = by[("survey_thanks", "13800138000")]
    assert (sms["channel"], sms["lang"], sms["recipient_kind"], sms["status"]) == ("sms", "zh", "customer", "queued")
    assert sms["rendered"] == "【Loom】张三，感谢评分2"                       # the sms variant
    mail = by[("survey_thanks", "ann@example.com")]
    assert mail["channel"] == "email" and mail["rendered"] == "Thanks Ann for 5 at 10:00"   # app timezone
    alert = by[("manager_alert", "rm_east")]
    assert alert["channel"] == "inapp" and alert["recipient_kind"] == "user"
    assert alert["rendered"] == "张三评分2，rm_east请处理" and alert["subject"] == "低分预警"
    assert ("manager_alert", "rm_south") not in by
    assert len(msgs) == 3


def test_consent_for_marketing_messages(rt, package_dir):
    s, _ = _setup(rt, package_dir)
    yes = s.create("customer", {"name": "有", "phone": "13900000001", "consent_marketing": True})
    no = s.create("customer", {"name": "无", "phone": "13900000002", "consent_marketing": False})
    dnd = s.create("customer", {"name": "扰", "phone": "13900000003", "consent_marketing": True, "do_not_disturb": True})
    for c in (yes, no, dnd):
        s.update("customer", c["id"], {"tier": "gold"})
    msgs = {m["recipient"]: m for m in outbox(rt)}
    assert msgs["13900000001"]["status"] == "queued" and msgs["13900000001"]["kind"] == "marketing"
    assert msgs["13900000002"]["status"] == "suppressed"
    assert "consent" in msgs["13900000002"]["last_error"]
    assert msgs["13900000003"]["status"] == "suppressed" and "disturbed" in msgs["13900000003"]["last_error"]
    log = rule_log(rt, rule="promo", record_id=no["id"])[0]["actions"][0]["messages"][0]
    assert log["status"] == "suppressed" and "consent" in log["reason"]


def test_quiet_hours_delay_customer_messages_not_staff(rt, package_dir):
    s, d = _setup(rt, package_dir, quiet='{start: "21:00", end: "08:00"}')
    add_user(rt, "rm", ["regional"], region="east")
    c = s.create("customer", {"name": "张", "phone": "13800000000"})
    rt.clock.set(dt.datetime(2026, 11, 23, 14, 30, tzinfo=dt.timezone.utc))     # 22:30 Shanghai
    s.create("survey", {"customer": c["id"], "dealer": d["id"], "score": 1})
    msgs = {m["recipient_kind"]: m for m in outbox(rt)}
    assert msgs["customer"]["due_at"] == dt.datetime(2026, 11, 24, 0, 0)        # 08:00 Shanghai next day
    assert msgs["user"]["due_at"] == dt.datetime(2026, 11, 23, 14, 30)
    rt.clock.set(dt.datetime(2026, 11, 23, 19, 0, tzinfo=dt.timezone.utc))      # 03:00 Shanghai
    s.create("survey", {"customer": c["id"], "dealer": d["id"], "score": 4})
    assert outbox(rt, recipient_kind="customer")[-1]["due_at"] == dt.datetime(2026, 11, 24, 0, 0)
    rt.clock.set(dt.datetime(2026, 11, 24, 1, 0, tzinfo=dt.timezone.utc))       # 09:00: not quiet
    s.create("survey", {"customer": c["id"], "dealer": d["id"], "score": 4})
    assert outbox(rt, recipient_kind="customer")[-1]["due_at"] == dt.datetime(2026, 11, 24, 1, 0)
    # delivery waits for the due time
    counts = tick(rt, dt.datetime(2026, 11, 23, 23, 0, tzinfo=dt.timezone.utc))
    assert counts["messages"] == 1                                             # only the staff alert


def test_frequency_cap_per_customer_per_calendar_day(rt, package_dir):
    s, d = _setup(rt, package_dir, cap="{per_customer: 2, per: 1d}")
    c = s.create("customer", {"name": "张", "phone": "13800000000", "consent_marketing": True})
    other = s.create("customer", {"name": "李", "phone": "13800000001"})
    for i in range(3):
        s.create("survey", {"customer": c["id"], "dealer": d["id"], "score": 5})
    s.update("customer", c["id"], {"tier": "gold"})                      # marketing, same customer, other template
    s.create("survey", {"customer": other["id"], "dealer": d["id"], "score": 5})
    statuses = [(m["recipient"], m["status"]) for m in outbox(rt)]
    assert statuses == [("13800000000", "queued"), ("13800000000", "queued"), ("13800000000", "suppressed"),
                        ("13800000000", "suppressed"), ("13800000001", "queued")]
    assert "frequency cap: 2 messages per 1d" in outbox(rt)[2]["last_error"]
    rt.clock.set(dt.datetime(2026, 11, 23, 16, 30, tzinfo=dt.timezone.utc))      # 00:30 next local day
    s.create("survey", {"customer": c["id"], "dealer": d["id"], "score": 5})
    assert outbox(rt)[-1]["status"] == "queued"


def test_idempotency_key_is_deterministic(rt, package_dir):
    """A retried timer renders the same key: the message is queued once."""
    from rules.actions.base import RunContext
    from rules.notify import idempotency_key
    s, _ = _setup(rt, package_dir)
    with rt.db.read() as conn:
        uow = s.uow(conn)
        a = RunContext(uow, "lead", {"id": 7}, trigger="date", source="r", occurrence="rule:shop:r:lead:7:x")
        b = RunContext(uow, "lead", {"id": 7}, trigger="date", source="r", occurrence="rule:shop:r:lead:7:x")
        c = RunContext(uow, "lead", {"id": 7}, trigger="date", source="r", occurrence="rule:shop:r:lead:7:y")
    assert idempotency_key(a, "t", "sms", "u") == idempotency_key(b, "t", "sms", "u") != idempotency_key(c, "t", "sms", "u")



def _count_outbox_inserts(rt):
    from sqlalchemy import event
    seen = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO LOOM_OUTBOX"):
            seen.append(statement)
    event.listen(rt.db.engine, "before_cursor_execute", count)
    return seen, lambda: event.remove(rt.db.engine, "before_cursor_execute", count)


def _send(rt, s, params, record, occurrence):
    from rules.actions.base import RunContext
    from rules.notify import send
    with rt.db.write() as conn:
        rc = RunContext(s.uow(conn), "lead", record, trigger="created", source="r", occurrence=occurrence)
        return send(rc, params)


def test_messages_of_one_notify_go_in_with_one_insert_and_repeats_are_duplicates(rt, package_dir):
    """Several recipients: one INSERT ... RETURNING per notify, and each message still says
    whether it was queued or was already there (the same occurrence again: 'duplicate')."""
    from rules.notify import NotifyParams, RecipientSpec
    s, _ = _setup(rt, package_dir)
    for name in ("rm_a", "rm_b"):
        add_user(rt, name, ["regional"], region="east")
    lead = s.create("lead", {"name": "x"})
    params = NotifyParams("hello", (RecipientSpec("role", role="regional"),))
    inserts, stop = _count_outbox_inserts(rt)
    try:
        first = _send(rt, s, params, lead, "o1")
        assert [(m["to"], m["status"]) for m in first["messages"]] == [("rm_a", "queued"), ("rm_b", "queued")]
        assert len(inserts) == 1
        add_user(rt, "rm_c", ["regional"], region="east")
        again = _send(rt, s, params, lead, "o1")                   # a retried timer, say
        assert [(m["to"], m["status"]) for m in again["messages"]] == [
            ("rm_a", "duplicate"), ("rm_b", "duplicate"), ("rm_c", "queued")]
        assert len(inserts) == 2
        # one recipient: one plain INSERT, the duplicate told by its row count
        one = NotifyParams("hello", (RecipientSpec("owner"),))
        owned = {**lead, "owner": "rm_a"}
        assert _send(rt, s, one, owned, "o2")["messages"][0]["status"] == "queued"
        assert _send(rt, s, one, owned, "o2")["messages"][0]["status"] == "duplicate"
        assert len(inserts) == 4
    finally:
        stop()
    msgs = outbox(rt, template="hello")
    assert sorted(m["recipient"] for m in msgs) == ["rm_a", "rm_a", "rm_b", "rm_c"]
    assert all(m["status"] == "queued" and m["rendered"].startswith("你好 rm_") for m in msgs)


def test_messages_about_a_record_created_in_the_same_transaction_cost_no_round_trip(rt, package_dir):
    """Their keys hold the new record's id, so no other transaction can have queued them: on
    PostgreSQL their INSERT rides along with the next statement instead of being a round trip of its
    own -- and a repeat within the transaction is still reported as a duplicate and written once."""
    from sqlalchemy import event
    from rules.actions.base import RunContext
    from rules.notify import NotifyParams, RecipientSpec, send
    s, _ = _setup(rt, package_dir)
    add_user(rt, "rm_a", ["regional"], region="east")
    one = NotifyParams("hello", (RecipientSpec("owner"),))
    old = s.create("lead", {"name": "created earlier"}, owner="rm_a")

    def notify_three_times(new: bool) -> tuple[list, int, dict]:
        trips = []                      # round trips made for an outbox INSERT (not carried by another statement)

        def seen(_conn, _cursor, statement, *_a):
            if statement.split(";\n")[-1].lstrip().startswith("INSERT INTO loom_outbox"):
                trips.append(statement)
        with rt.db.write() as conn:
            uow = s.uow(conn)
            lead = rt.services["records"].create(uow, "lead", {"name": "x"}, trusted=True, owner="rm_a") if new else old
            event.listen(rt.db.engine, "before_cursor_execute", seen)
            try:
                statuses = [send(RunContext(uow, "lead", lead, trigger="created", source="r", occurrence=occ), one)
                            ["messages"][0]["status"] for occ in ("o1", "o1", "o2")]
            finally:
                event.remove(rt.db.engine, "before_cursor_execute", seen)
        return statuses, len(trips), lead

    earlier, earlier_trips, _ = notify_three_times(new=False)
    fresh, fresh_trips, lead = notify_three_times(new=True)
    assert earlier == fresh == ["queued", "duplicate", "queued"]
    assert earlier_trips == 3
    # SQLite runs in-process: there are no round trips to save, each INSERT runs at once
    assert fresh_trips == (0 if rt.db.dialect == "postgresql" else 3)
    msgs = outbox(rt, template="hello")
    assert sorted(m["record_id"] for m in msgs) == sorted([old["id"], old["id"], lead["id"], lead["id"]])


def test_frequency_cap_counts_the_messages_just_queued_by_the_same_notify(rt, package_dir):
    """Two recipients of one notify share a phone: the second must see the first in its cap count."""
    setup_app(rt, package_dir, """
    rules:
      - name: both
        on: {created: referral}
        actions:
          - notify: {template: hello, to: [self, customer]}
    """, cap="{per_customer: 1, per: 1d}", extra={"forms/referral.yaml": """\
name: referral
fields:
  name: {type: text, required: true}
  phone: {type: phone}
  customer: {type: link, form: customer}
"""})
    s = Session(rt)
    c = s.create("customer", {"name": "张", "phone": "13800000000"})
    s.create("referral", {"name": "李", "phone": "13800000000", "customer": c["id"]})
    assert [(m["recipient"], m["status"]) for m in outbox(rt)] == [("13800000000", "queued"),
                                                                   ("13800000000", "suppressed")]
    log = rule_log(rt, rule="both")[0]["actions"][0]["messages"]
    assert [m["status"] for m in log] == ["queued", "suppressed"] and "frequency cap" in log[1]["reason"]


def test_outbox_rows_written_as_driver_sql_are_stored_like_sqlalchemy_would():
    """enqueue's one-row INSERT is driver SQL with the column types' own conversions (SQLite keeps
    DateTime as text): the stored values must equal what the SQLAlchemy statement writes."""
    from sqlalchemy import create_engine, select, text
    from engine import outbox as O
    from engine import platform as P
    eng = create_engine("sqlite://")
    P.outbox.metadata.create_all(eng, tables=[P.outbox])
    now = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.timezone.utc)              # microsecond 0: the tricky one
    later = dt.datetime(2026, 11, 23, 3, 0, 0, 5, tzinfo=dt.timezone.utc)
    args = dict(app="a", template="t", channel="sms", recipient="1", rendered="50% off", due_at=later, now=now,
                lang="zh", recipient_kind="customer", form="lead", record_id=1, last_error=None)
    with eng.begin() as conn:
        assert O.enqueue(conn, key="k1", **args) is True
        assert O.enqueue(conn, key="k1", **args) is False
        conn.execute(O._insert_statement("sqlite"), dict(zip(O._COLUMNS, O.message_row(key="k2", **args))))
        raw = [tuple(r) for r in conn.execute(text(
            "SELECT due_at, created_at, rendered, typeof(due_at) FROM loom_outbox ORDER BY idempotency_key"))]
        assert raw[0] == raw[1] and raw[0][0] == "2026-11-23 03:00:00.000005" and raw[0][1] == "2026-11-23 02:00:00.000000"
        assert conn.execute(select(P.outbox.c.due_at).where(P.outbox.c.idempotency_key == "k1")).scalar() == \
            later.replace(tzinfo=None)
        assert O.enqueue_rows(conn, [O.message_row(key=k, **args) for k in ("k1", "k3", "k2", "k4")]) == {"k3", "k4"}
        assert O.enqueue_rows(conn, []) == set()


# -- the template sandbox -------------------------------------------------------------

def _app(files: dict):
    from engine.package import SourcePackage
    return SimpleNamespace(digest=str(hash(tuple(sorted(files.items())))), package=SourcePackage(
        {k: v.encode() for k, v in files.items()}, "test"), default_language="zh", tz=ZoneInfo("Asia/Shanghai"),
        section=lambda name, default=None: default)


@pytest.mark.parametrize("source, expect", [
    ("{{ ''.__class__.__mro__ }}", "refused by the sandbox"),
    ("{{ x|attr('__class__') }}", "refused by the sandbox"),
    ("{{ cycler.__init__.__globals__.os.environ }}", "refused by the sandbox"),
    ("{% include '../app.yaml' %}", "not a file in templates/"),
    ("{% include '/etc/passwd' %}", "not a file in templates/"),
    ("{{ lipsum() }}", "'lipsum' is undefined"),
    ("{% for i in range(10**7) %}x{% endfor %}", "sandbox blocks ranges"),
])
def test_template_sandbox_refuses_escapes_with_clear_messages(source, expect):
    from rules.templates import Templates, TemplateProblem
    app = _app({"templates/t.zh.j2": source, "app.yaml": "name: x"})
    with pytest.raises(TemplateProblem) as exc:
        Templates().render(app, "t", None, "zh", {"x": "abc"})
    assert expect in str(exc.value) and "templates/t.zh.j2" in str(exc.value)


def test_a_template_cannot_change_the_data_it_is_given():
    """The record in a message's context is the one the rule's next actions read: a template may
    read it, never change it."""
    from rules.templates import Templates, TemplateProblem
    record = {"name": "张三", "tags": ["vip"]}
    for source in ("{{ record.update({'name': 'x'}) }}", "{{ record.tags.append('spam') }}",
                   "{{ record.pop('name') }}"):
        app = _app({"templates/t.zh.j2": source, "app.yaml": "name: x"})
        with pytest.raises(TemplateProblem, match="refused by the sandbox"):
            Templates().render(app, "t", None, "zh", {"record": record})
    assert record == {"name": "张三", "tags": ["vip"]}


def test_template_field_reads_on_plain_dicts_match_jinja():
    """The sandbox reads ``record.name`` on a plain dict straight from the item; what a template
    sees must be what jinja's getattr-then-item order gives, dict methods and '_' names included."""
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import SandboxedEnvironment
    from rules.templates import make_environment
    ours = make_environment({})
    theirs = SandboxedEnvironment()
    d = {"name": "n", "items": "shadowed", "_x": 1, "none": None}
    for attr in ("name", "missing", "items", "keys", "_x", "none", "get"):
        a, b = ours.getattr(d, attr), theirs.getattr(d, attr)
        assert type(a) is type(b) and a == b, attr
    with pytest.raises(SecurityError):
        ours.getattr(d, "__class__")                 # as before: refused loudly
    src = "{{ d.name }}|{{ d.missing }}|{{ d.items is callable }}|{{ d.keys()|list|length }}|{{ d.none }}"
    assert ours.from_string(src).render(d=d) == "n||True|4|"


def test_templates_see_jinja_globals_and_their_variables_win():
    from rules.templates import Templates
    app = _app({"templates/t.zh.j2": "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
                                     "{% endfor %}{{ ns.n }}|{{ joiner }}|{{ dict(a=1)['a'] }}"})
    t = Templates()
    ctx = {"joiner": "mine"}
    assert t.render(app, "t", None, "zh", ctx).text == "3|mine|1"
    assert t.render(app, "t", None, "zh", ctx).text == "3|mine|1" and ctx == {"joiner": "mine"}


def test_template_plain_text_vs_html_escaping():
    from rules.templates import Templates
    app = _app({"templates/t.zh.j2": "A&B {{ v }}", "templates/t.email.zh.html.j2": "<p>{{ v }}</p>"})
    t = Templates()
    assert t.render(app, "t", "sms", "zh", {"v": "<b>&"}).text == "A&B <b>&"
    assert t.render(app, "t", "email", "zh", {"v": "<b>&"}).text == "<p>&lt;b&gt;&amp;</p>"


def test_unsafe_template_is_rejected_at_validation(package_dir):
    import ui.wiring
    from engine.definitions import validate_package
    from engine.package import read_package
    from tests.rules.pkg import files
    ui.wiring.load_engines()
    root = package_dir(files("", templates={"templates/evil.zh.j2": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
                                            "templates/Bad-Name.j2": "x"}))
    problems = [str(p) for p in validate_package(read_package(root))]
    assert "templates/evil.zh.j2:1:1: templates may not use '__class__', '__mro__', '__subclasses__': names starting with '_' are refused by the template sandbox" in problems
    assert any(p.startswith("templates/Bad-Name.j2:1:1: template file names are") for p in problems)


def test_render_failure_fails_the_rule_clearly(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: bad_notify
        on: {created: lead}
        actions: [{notify: {template: boom, to: owner}}]
    """, templates={"templates/boom.zh.j2": "{{ x|attr('__class__') }}"})
    add_user(rt, "ann", ["sales"])
    with pytest.raises(LoomError) as exc:
        Session(rt).create("lead", {"name": "x"}, owner="ann")
    assert "rule 'bad_notify'" in exc.value.message and "sandbox" in exc.value.message
    assert outbox(rt) == []
