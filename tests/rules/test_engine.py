"""Loop protection, the rule log and the record timeline, priorities, condition errors, compile problems."""
from __future__ import annotations

import datetime as dt

import pytest

from engine import platform as P
from engine.errors import RecordInvalid
from engine.uow import MAX_DEPTH
from tests.conftest import T0
from tests.rules.pkg import Session, add_user, files, history, outbox, rule_log, setup_app


def test_rule_updating_its_own_record_stops_with_a_clear_error_and_writes_nothing(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: count_updates
        on: {updated: lead}
        actions: [{set: {counter: "counter + 1"}}]
    """)
    s = Session(rt)
    lead = s.create("lead", {"name": "x"})
    before = (len(history(rt, "lead", lead["id"])), len(rule_log(rt)))
    with pytest.raises(RecordInvalid) as exc:
        s.update("lead", lead["id"], {"note": "edit"})
    assert exc.value.errors[0]["code"] == "loop"
    assert f"{MAX_DEPTH} levels deep" in exc.value.errors[0]["message"]
    after = s.load("lead", lead["id"])
    assert after["note"] is None and after["counter"] == 0
    assert (len(history(rt, "lead", lead["id"])), len(rule_log(rt))) == before


def test_loop_error_through_the_api_is_a_422_with_the_message(api, package_dir):
    rt = api.rt
    setup_app(rt, package_dir, """
    rules:
      - name: count_updates
        on: {updated: lead}
        actions: [{set: {counter: "counter + 1"}}]
    """)
    lead = Session(rt).create("lead", {"name": "x"})
    admin = api.user("root", ["admin"])
    r = api.http.patch(f"/api/apps/shop/lead/{lead['id']}", json={"note": "edit"}, headers=admin)
    if r.status_code == 405:
        r = api.http.put(f"/api/apps/shop/lead/{lead['id']}", json={"note": "edit"}, headers=admin)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["code"] == "loop" and "levels deep" in r.json()["errors"][0]["message"]
    assert Session(rt).load("lead", lead["id"])["note"] is None


def test_run_rule_chain_respects_max_depth(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: ping
        on: {created: lead}
        actions: [{add_tag: ping}, {run_rule: pong}]
      - name: pong
        on: {updated: lead}
        enabled: false
        actions: [{run_rule: ping}]
    """)
    with pytest.raises(RecordInvalid) as exc:
        Session(rt).create("lead", {"name": "x"})
    assert exc.value.errors[0]["code"] == "loop" and "run_rule" in exc.value.errors[0]["message"]
    assert Session(rt).rows(rt.services["records"].table(rt.app("shop"), "lead")) == []


def test_rule_log_and_timeline(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: hot_lead
        label: {zh: 热线索, en: Hot lead}
        on: {created: lead}
        when: "source == 'referral' and customer.phone != None"
        priority: 5
        actions: [{set: {level: "'H'"}}, {add_tag: hot}]
      - name: after_hot
        on: {created: lead}
        when: "level == 'H'"
        priority: 50
        actions: [{set: {score: 99}}]
      - name: never
        on: {created: lead}
        when: "false"
        actions: [{set: {score: 1}}]
    """)
    s = Session(rt)
    c = s.create("customer", {"name": "张", "phone": "13800138000"})
    lead = s.create("lead", {"name": "x", "source": "referral", "customer": c["id"]})
    assert lead["level"] == "H" and lead["score"] == 99          # the later rule saw the earlier one's change
    log = rule_log(rt)
    assert [(r["rule"], r["outcome"], r["trigger"], r["form"], r["record_id"]) for r in log] == [
        ("hot_lead", "fired", "created", "lead", lead["id"]), ("after_hot", "fired", "created", "lead", lead["id"])]
    assert log[0]["inputs"] == {"source": "referral", "customer.phone": "13800138000"}
    assert log[0]["actions"] == [{"action": "set", "set": {"level": "H"}}, {"action": "add_tag", "field": "tags", "tag": "hot"}]
    lines = [h for h in history(rt, "lead", lead["id"]) if h["kind"] == "rule"]
    assert [h["changes"]["rule"] for h in lines] == ["hot_lead", "after_hot"]
    assert lines[0]["changes"]["label"] == {"zh": "热线索", "en": "Hot lead"}
    assert lines[0]["changes"]["actions"][0] == {"action": "set", "set": {"level": "H"}}
    # the service the UI reads
    with rt.db.read() as conn:
        got = rt.services["rules"].log_for(s.uow(conn), "lead", lead["id"])
    assert [g["rule"] for g in got] == ["after_hot", "hot_lead"]


def test_a_firing_is_recorded_once(rt, package_dir):
    # on a record: its timeline line carries the log's facts (no rule-log row); the inputs are for the
    # log only -- they may hold related records' fields the timeline's readers can't see
    setup_app(rt, package_dir, """
    rules:
      - name: hot_lead
        on: {created: lead}
        when: "source == 'referral'"
        actions: [{set: {level: "'H'"}}]
      - name: broken
        on: {created: lead}
        when: "name + 1 > 1"
        actions: [{set: {score: 1}}]
    """)
    s = Session(rt)
    lead = s.create("lead", {"name": "x", "source": "referral"})
    assert [(r["rule"], r["outcome"]) for r in s.rows(P.rule_log)] == [("broken", "error")]
    rule_lines = [h for h in s.rows(P.history, P.history.c.record_id == lead["id"]) if h["kind"] == "rule"]
    assert [(h["changes"]["rule"], h["changes"]["inputs"]) for h in rule_lines] == [("hot_lead", {"source": "referral"})]
    with rt.db.read() as conn:
        shown = rt.services["records"].history(s.uow(conn), "lead", lead["id"])
    assert [h["changes"] for h in shown if h["kind"] == "rule"] == [
        {"rule": "hot_lead", "label": {"zh": "hot_lead", "en": "hot_lead"}, "trigger": "created",
         "actions": [{"action": "set", "set": {"level": "H"}}]}]
    # the log reads both, newest first; a rule-log row written for a firing that also has its timeline
    # line (as before the two were one) is not shown twice
    with rt.db.write() as conn:
        conn.execute(P.rule_log.insert().values(app="shop", rule="hot_lead", form="lead", record_id=lead["id"], at=T0,
                                                trigger="created", inputs={}, outcome="fired", actions=[]))
    log = rule_log(rt)
    assert [(r["rule"], r["outcome"], r["record_id"], r["inputs"]) for r in log] == [
        ("hot_lead", "fired", lead["id"], {"source": "referral"}), ("broken", "error", lead["id"], log[1]["inputs"])]
    assert log[1]["inputs"]["error"].startswith("condition:")



def test_the_rule_log_finds_rule_lines_by_index_not_by_walking_the_history(rt):
    # a form with few rule lines in a long history made the log walk all of it (0.3 s per million
    # lines on PostgreSQL); ix_loom_history_rules (migration 0007, rule lines only) starts from the
    # form's newest one
    from rules.engine import log_queries
    explain = "EXPLAIN QUERY PLAN " if rt.db.is_sqlite else "EXPLAIN "
    indexes = ("ix_loom_history_rules", "ix_loom_history_record")
    with rt.db.write() as conn:
        if not rt.db.is_sqlite:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")      # an empty table: ask which index
        for form, record_id in (("lead", None), ("lead", 7), (None, None)):
            _, lines = log_queries("shop", form, record_id, 100)
            sql = str(lines.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r) for r in conn.exec_driver_sql(explain + sql).all())
            if form is None and not rt.db.is_sqlite:
                # all forms: the planner may also walk the primary key newest first, which stops after
                # `limit` rule lines where they are common; either way not the record index
                assert "ix_loom_history_rules" in plan or "loom_history_pkey" in plan, plan
            elif record_id is None:
                assert "ix_loom_history_rules" in plan, (form, plan)
            else:
                assert any(ix in plan for ix in indexes), (form, record_id, plan)


def test_the_rule_log_api_answers_why(api, package_dir):
    # analysts (manage_app) read each firing with what its condition read and what it did
    rt = api.rt
    setup_app(rt, package_dir, """
    rules:
      - name: hot_lead
        on: {created: lead}
        when: "source == 'referral'"
        actions: [{set: {level: "'H'"}}]
      - name: shaky
        on: {created: lead}
        when: "score + 'x' > 1"
        actions: [{add_tag: never}]
    """)
    s = Session(rt)
    a = s.create("lead", {"name": "a", "source": "referral", "score": 5})
    rt.clock.set(T0 + dt.timedelta(minutes=5))
    b = s.create("lead", {"name": "b", "source": "website", "score": 5})
    root, seller = api.user("root", ["admin"]), api.user("sam", ["sales"])
    got = api.http.get("/api/apps/shop/rules/log", headers=root)
    assert got.status_code == 200, got.text
    assert [(i["rule"], i["record_id"], i["outcome"]) for i in got.json()["items"]] == [
        ("shaky", b["id"], "error"), ("shaky", a["id"], "error"), ("hot_lead", a["id"], "fired")]
    of_a = api.http.get(f"/api/apps/shop/rules/log?form=lead&record_id={a['id']}", headers=root).json()["items"]
    assert [i["rule"] for i in of_a] == ["shaky", "hot_lead"]
    assert of_a[1] == {"rule": "hot_lead", "form": "lead", "record_id": a["id"], "at": "2026-11-23T02:00:00Z",
                       "trigger": "created", "outcome": "fired", "inputs": {"source": "referral"},
                       "actions": [{"action": "set", "set": {"level": "H"}}]}
    assert of_a[0]["inputs"]["error"].startswith("condition:")
    assert len(api.http.get("/api/apps/shop/rules/log?limit=1", headers=root).json()["items"]) == 1
    assert api.http.get("/api/apps/shop/rules/log", headers=seller).status_code == 403
    assert api.http.get("/api/apps/nope/rules/log", headers=root).status_code == 404


def test_pii_in_conditions_is_masked_in_the_log(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: has_phone
        on: {created: customer}
        when: "phone != None"
        actions: [{add_tag: reachable}]
    """)
    Session(rt).create("customer", {"name": "张", "phone": "13800138000"})
    assert rule_log(rt)[0]["inputs"]["phone"] != "13800138000"


def test_condition_error_is_logged_and_the_request_succeeds(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: shaky
        on: {created: lead}
        when: "score + 'x' > 1"
        actions: [{add_tag: never}]
    """)
    lead = Session(rt).create("lead", {"name": "x", "score": 5})
    assert lead["tags"] is None
    log = rule_log(rt)
    assert log[0]["outcome"] == "error" and log[0]["inputs"]["error"].startswith("condition:")


def test_owner_user_and_created_in_later_actions(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: assign_and_link
        on: {created: lead}
        actions:
          - assign: {role: sales, match: {region: region}}
          - set: {note: "concat(owner_user.name, '@', owner_user.dealer)"}
          - create: {form: follow_up, values: {lead: id, note: "'auto'"}}
          - set: {counter: "created.id"}
    """)
    add_user(rt, "ann", ["sales"], region="east", dealer="D7")
    lead = Session(rt).create("lead", {"name": "x", "region": "east"})
    assert lead["owner"] == "ann" and lead["note"] == "ann@D7" and lead["counter"] == 1


def test_compile_problems_point_at_the_yaml(package_dir):
    import ui.wiring
    from engine.definitions import validate_package
    from engine.package import read_package
    ui.wiring.load_engines()
    bad = """
rules:
  - name: a
    on: {created: leed}
    actions: [{set: {note: "'x'"}}]
  - name: b
    on: {changed: lead, fields: [levle]}
    when: "levl == 'H'"
    actions:
      - notify: {template: hello, to: {role: salez}}
      - assign: {role: sales, match: {regoin: region}}
      - set: {id: 3}
  - name: b
    on: {schedule: "61 * * * *"}
    actions: [{set: {note: "'x'"}}]
  - name: c
    on: {webhook: true}
    actions: [{webhook: {url: "ftp://x", secret_env: X}}]
  - name: d
    on: {date: lead, field: note, offset: 1d}
    actions: [{task: {title: t, assignee: customer}}]
"""
    problems = [str(p) for p in validate_package(read_package(package_dir(files(bad))))]
    expected = [
        "rules/rules.yaml:4:19: unknown form 'leed'; did you mean 'lead'?",
        "rules/rules.yaml:7:34: unknown field 'levle' in form 'lead'; did you mean 'level'?",
        "rules/rules.yaml:8:12: unknown field 'levl' in form 'lead'; did you mean 'level'? (in expression 'levl == 'H'')",
        "rules/rules.yaml:10:46: unknown role 'salez'; did you mean 'sales'?",
        "rules/rules.yaml:11:39: unknown user attribute 'regoin'; did you mean 'region'? (declare it under user_attributes in app.yaml)",
        "rules/rules.yaml:12:15: 'id' is maintained by the system and cannot be set",
        "rules/rules.yaml:13:11: rule 'b' is already defined at rules/rules.yaml:6; rule names are unique per app",
        "rules/rules.yaml:17:5: an hmac webhook needs 'secret_env: <ENVIRONMENT_VARIABLE>' holding the shared secret (secrets never go into the package)",
        "rules/rules.yaml:18:31: 'url' must be an http:// or https:// address",
        "rules/rules.yaml:20:29: field 'note' is a text field; a date trigger needs a date or datetime field",
        "rules/rules.yaml:21:43: 'customer' links to a customer record; a task goes to a user (owner, a user field, {role: ...})",
    ]
    assert sorted(problems) == sorted(expected), problems


def test_set_on_a_deleted_record_is_ignored_other_actions_run(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: gone
        on: {deleted: lead}
        actions:
          - set: {note: "'bye'"}
          - create: {form: complaint, values: {severity: "'low'"}}
    """)
    s = Session(rt)
    lead = s.create("lead", {"name": "x"})
    s.delete("lead", lead["id"])
    assert len(s.rows(rt.services["records"].table(rt.app("shop"), "complaint"))) == 1
    assert rule_log(rt)[0]["outcome"] == "fired"


def test_created_rules_that_fill_in_fields_run_before_the_insert(rt, package_dir):
    """Pre-save phase: the record is inserted with the rules' values (no UPDATE, no 'update' line);
    changed-rules still see those fields as changed; a rule reading the id waits for the INSERT."""
    setup_app(rt, package_dir, """
    rules:
      - name: hot
        on: {created: lead}
        when: "source == 'referral'"
        actions: [{set: {level: "'H'"}}, {add_tag: hot}]
      - name: needs_id
        on: {created: lead}
        when: "id != None"
        actions: [{set: {note: "'stored'"}}]
      - name: level_watch
        on: {changed: lead, fields: [level]}
        when: "old.level == None and level == 'H'"
        actions: [{set: {counter: "coalesce(counter, 0) + 1"}}]
    """)
    rules = rt.app("shop").section("rules")
    assert (rules["hot"].presave, rules["needs_id"].presave, rules["level_watch"].presave) == (2, None, None)
    s = Session(rt)
    lead = s.create("lead", {"name": "x", "source": "referral"})
    assert lead["level"] == "H" and lead["tags"] == ["hot"] and lead["note"] == "stored" and lead["counter"] == 1
    lines = history(rt, "lead", lead["id"])
    assert lines[0]["kind"] == "create" and [h["changes"]["rule"] for h in lines if h["kind"] == "rule"] == [
        "hot", "needs_id", "level_watch"]
    assert [(r["rule"], r["record_id"]) for r in rule_log(rt)] == [
        ("hot", lead["id"]), ("needs_id", lead["id"]), ("level_watch", lead["id"])]


def test_changed_rules_after_the_pre_save_phase_fire_as_their_conditions_say(rt, package_dir):
    """The changed-rules a pre-save phase triggers are checked before any run is made for them: the
    one whose condition holds fires (with ``old``, ``changed()`` and ``event`` as usual), the false
    ones leave no trace, and a condition that fails is logged as an error."""
    setup_app(rt, package_dir, """
    rules:
      - name: hot
        on: {created: lead}
        when: "source == 'referral'"
        actions: [{set: {level: "'H'"}}]
      - name: after_insert             # reads the id: runs after the INSERT, on the stored record
        on: {created: lead}
        when: "id != None and name == 'nobody'"
        actions: [{set: {note: "'nobody'"}}]
      - name: level_up
        on: {changed: lead, fields: [level]}
        when: "changed('level') and old.level == None and level == 'H' and event.transition == None"
        actions: [{set: {note: "'up'"}}]
      - name: never
        on: {changed: lead, fields: [level]}
        when: "old.source != source"
        actions: [{set: {note: "'never'"}}]
      - name: broken
        on: {changed: lead, fields: [level]}
        when: "level + 1 > 1"
        actions: [{set: {note: "'broken'"}}]
    """)
    lead = Session(rt).create("lead", {"name": "x", "source": "referral"})
    assert lead["level"] == "H" and lead["note"] == "up"
    outcomes = {r["rule"]: r["outcome"] for r in rule_log(rt)}
    assert outcomes == {"hot": "fired", "level_up": "fired", "broken": "error"}, outcomes


class _Statements:
    def __init__(self, rt):
        from sqlalchemy import event
        self.texts: list[str] = []
        event.listen(rt.db.engine, "before_cursor_execute", self.seen)

    def seen(self, _conn, _cursor, statement, *_a):
        self.texts.append(statement)


def test_a_lookup_before_the_insert_is_a_subquery_of_the_insert(rt, package_dir):
    """A pre-save ``set`` of a link from a look-up that nothing reads before the INSERT costs no
    statement of its own: the INSERT runs the SELECT and hands back its result with the new id."""
    setup_app(rt, package_dir, """
    rules:
      - name: dealer_of_region
        on: {created: lead}
        when: "region != None"
        actions:
          - set: {dealer: {lookup: dealer, where: {region: region}}, note: "'routed'"}
          - set: {level: "'B'"}
    """)
    rule = rt.app("shop").section("rules")["dealer_of_region"]
    assert rule.presave == 2 and rule.actions[0].params[0][1].deferrable
    s = Session(rt)
    east = s.create("dealer", {"code": "E1", "region": "east"})
    s.create("dealer", {"code": "E2", "region": "east"})             # not the first: never chosen
    sent = _Statements(rt)
    lead = s.create("lead", {"name": "x", "region": "east"})
    assert lead["dealer"] == east["id"] and lead["note"] == "routed" and lead["level"] == "B"
    reads = [t for t in sent.texts if "FROM shop__dealer" in t]
    assert len(reads) == 1 and reads[0].lstrip().startswith("INSERT INTO shop__lead"), reads
    nobody = s.create("lead", {"name": "y", "region": "north"})    # no dealer there: the link stays empty
    assert nobody["dealer"] is None and nobody["note"] == "routed"
    logged = {r["record_id"]: r["actions"] for r in rule_log(rt, rule="dealer_of_region")}
    assert logged[lead["id"]][0] == {"action": "set", "set": {"dealer": east["id"], "note": "routed"}}
    assert logged[nobody["id"]][0]["set"]["note"] == "routed"


def test_a_lookup_by_a_unique_field_is_a_bare_subquery(rt, package_dir):
    """A look-up on one field unique across the form finds at most one record: its subquery has no
    ORDER BY/LIMIT for the server to plan (a look-up on any other field takes the first by id)."""
    setup_app(rt, package_dir, """
    rules:
      - name: dealer_by_code
        on: {created: lead}
        when: "region != None"
        actions:
          - set: {dealer: {lookup: dealer, where: {code: "upper(region)"}}}
    """)
    s = Session(rt)
    s.create("dealer", {"code": "NORTH", "region": "east"})
    east = s.create("dealer", {"code": "EAST", "region": "east"})
    sent = _Statements(rt)
    lead = s.create("lead", {"name": "x", "region": "east"})
    assert lead["dealer"] == east["id"]
    insert = [t for t in sent.texts if "FROM shop__dealer" in t]
    assert len(insert) == 1 and "LIMIT" not in insert[0] and "ORDER BY" not in insert[0], insert
    assert s.create("lead", {"name": "y", "region": "south"})["dealer"] is None     # no SOUTH dealer


def test_a_lookup_a_later_rule_reads_before_the_insert_runs_at_once(rt, package_dir):
    setup_app(rt, package_dir, """
    rules:
      - name: dealer_of_region
        on: {created: lead}
        priority: 1
        actions:
          - set: {dealer: {lookup: dealer, where: {region: region}}}
      - name: dealer_known
        on: {created: lead}
        priority: 2
        when: "dealer != None and dealer.code == 'S1'"
        actions:
          - set: {note: "'south dealer'"}
    """)
    rules = rt.app("shop").section("rules")
    assert rules["dealer_known"].presave == 1
    assert not rules["dealer_of_region"].actions[0].params[0][1].deferrable
    s = Session(rt)
    south = s.create("dealer", {"code": "S1", "region": "south"})
    lead = s.create("lead", {"name": "x", "region": "south"})
    assert lead["dealer"] == south["id"] and lead["note"] == "south dealer"


def test_a_new_record_never_gets_the_id_of_a_deleted_one(rt, package_dir):
    """Timeline lines, rule-log rows and message keys are keyed by record id.  SQLite (without
    AUTOINCREMENT) gave a deleted last row's id to the next record: it then showed the deleted
    record's timeline and its welcome message was dropped as a duplicate of the old one's."""
    setup_app(rt, package_dir, """
    rules:
      - name: welcome
        on: {created: lead}
        actions:
          - notify: {template: hello, to: owner}
    """)
    add_user(rt, "rm_a", ["regional"], region="east")
    s = Session(rt)
    first = s.create("lead", {"name": "first"}, owner="rm_a")
    s.delete("lead", first["id"])
    second = s.create("lead", {"name": "second"}, owner="rm_a")
    assert second["id"] != first["id"]
    assert [h["kind"] for h in history(rt, "lead", second["id"])] == ["create", "rule"]
    sent = outbox(rt, template="hello")
    assert sorted(m["record_id"] for m in sent) == sorted([first["id"], second["id"]])


@pytest.mark.parametrize("name, says", [("LOOM_SECRET_KEY", "one of Loom's own secret settings"),
                                        ("loom_database_url", "one of Loom's own secret settings"),
                                        ("HOME", "anyone can guess"), ("LC_CTYPE", "anyone can guess")])
def test_a_webhook_secret_is_never_one_of_looms_settings_or_a_guessable_variable(package_dir, name, says):
    """An incoming hook 'signed' with $HOME could be forged by anyone; a hook whose shared secret is
    LOOM_SECRET_KEY would hand the key that encrypts personal data to the other side of the hook."""
    from engine.definitions import validate_package
    from engine.package import read_package
    for rule in (f"on: {{webhook: true, secret_env: {name}}}\n    actions: [{{create: {{form: complaint, values: {{severity: \"'low'\"}}}}}}]",
                 f"on: {{created: lead}}\n    actions: [{{webhook: {{url: \"https://dms.example.cn/h\", secret_env: {name}}}}}]"):
        text = f"rules:\n  - name: hook\n    {rule}\n"
        problems = [str(p) for p in validate_package(read_package(package_dir(files(text))))]
        assert len(problems) == 1 and says in problems[0] and f"'{name}'" in problems[0], problems
        line, col = map(int, problems[0].split(":")[1:3])
        assert text.splitlines()[line - 1][col - 1:].startswith(name), problems   # at the secret_env value
