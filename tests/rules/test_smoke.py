from tests.rules.pkg import Session, add_user, setup_app, rule_log, history


RULES = """
rules:
  - name: score_it
    on: {created: lead}
    actions:
      - decide: lead_scoring
  - name: assign_lead
    on: {created: lead}
    when: "owner == None and region != None"
    priority: 10
    actions:
      - assign: {strategy: round_robin, role: sales, match: {region: region}}
      - set: {assigned_at: "now()"}
      - notify: {template: hello, to: owner}
decision_tables:
  - name: lead_scoring
    hit_policy: first
    inputs: [source, test_drive]
    outputs: [score, level]
    rows:
      - {when: ["in ['referral', 'walk_in']", "== true"], then: [90, H]}
      - {when: ["-", "-"], then: [30, C]}
"""


def test_smoke(rt, package_dir):
    setup_app(rt, package_dir, RULES)
    add_user(rt, "ann", ["sales"], region="east")
    add_user(rt, "bob", ["sales"], region="east")
    s = Session(rt)
    a = s.create("lead", {"name": "x", "region": "east", "source": "referral", "test_drive": True})
    b = s.create("lead", {"name": "y", "region": "east"})
    assert a["owner"] == "ann" and b["owner"] == "bob"
    assert a["score"] == 90 and a["level"] == "H"
    assert b["score"] == 30
    assert a["assigned_at"] is not None
    assert len(rule_log(rt)) == 4
    print(history(rt, "lead", a["id"]))
