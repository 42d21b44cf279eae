"""Demo data from the package's ``seed/`` folder -- deterministic, definitions only.

Files in ``seed/`` run in name order.  Each is either a list of records::

    form: dealer
    records:
      - {code: D001, name: 上海浦东智行4S店, region: east}

or a generator::

    form: customer
    generate:
      count: 2000
      seed: 7                      # same data on every machine
      fields:
        name: {format: "{surnames}{given_names}"}     # pools from seed/pools.yaml
        phone: {digits: "13#########"}
        dealer: {ref: dealer}                          # id of a random dealer record
        region: {from: dealer.region}                  # a field of the referenced record
        tier: {pick: {diamond: 5, gold: 15, silver: 30, regular: 50}}
        birthday: {date: [-20000d, -7000d]}            # days relative to now
        created_at: {datetime: [-365d, 0d]}
        mileage: {int: [0, 60000]}
        amount: {decimal: [200, 8000, 2]}
        delivery_date: {expr: "add_days(purchase_date, 7)", null: 0.1}
        vin: {generate: vin}                           # valid VIN / id_card / plate

Value specs: ``const``, ``pick`` (list, pool name, or weights), ``format``,
``digits``, ``int``, ``decimal``, ``date``, ``datetime``, ``ref``, ``from``,
``expr``, ``seq``, ``generate``; any spec may add ``null: <probability>``.
Rows are inserted with :func:`forms.bulk.bulk_insert` (validated, no rules).
"""
from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any

from sqlalchemy import select

from engine.auth import SYSTEM_USER
from engine.expressions import compile_expression
from engine.uow import UnitOfWork
from engine.yamlpos import load_yaml

from .bulk import bulk_insert

_REL = re.compile(r"^(-?\d+)([dh])$")


def _offset(text: str) -> dt.timedelta:
    m = _REL.match(str(text).strip())
    if not m:
        raise ValueError(f"'{text}' is not a relative time like -365d or 0d")
    n = int(m.group(1))
    return dt.timedelta(days=n) if m.group(2) == "d" else dt.timedelta(hours=n)


class Seeder:
    def __init__(self, runtime):
        self.rt = runtime

    def seed_demo(self, rt, app_name: str) -> list[str]:
        app = rt.app(app_name)
        files = sorted(p for p in app.package.files if p.startswith("seed/") and p.endswith((".yaml", ".yml"))
                       and p not in ("seed/pools.yaml", "seed/users.yaml"))
        pools = {}
        if "seed/pools.yaml" in app.package.files:
            pools = load_yaml(app.package.text("seed/pools.yaml")).data or {}
        lines = []
        records = rt.services["records"]
        with rt.db.write() as conn:
            uow = UnitOfWork(rt, conn, app, SYSTEM_USER, rt.clock.now(), lang="en")
            for path in files:
                spec = load_yaml(app.package.text(path)).data or {}
                form = records.form(app, spec["form"])
                table = records.table(app, form.name)
                if "records" in spec:
                    rows = spec["records"]
                elif "records_pool" in spec:
                    rows = [{k: v for k, v in r.items() if k in form.fields} for r in _pool(pools, spec["records_pool"])]
                else:
                    rows = list(self._generate(uow, spec["form"], spec["generate"], pools))
                report = bulk_insert(uow, form, table, rows, mode="all")
                lines.append(f"  seeded {report.inserted} {form.name} records")
            # Bulk rows bypass events: let the rules engine schedule the date-relative
            # reminders (maintenance, retention, follow-ups) that are still ahead.
            rules = rt.services.get("rules")
            if rules is not None and hasattr(rules, "schedule_date_timers"):
                lines.append(f"  scheduled {rules.schedule_date_timers(uow)} upcoming reminders")
            flows = rt.services.get("flows")
            if flows is not None and hasattr(flows, "adopt_existing"):
                counts = flows.adopt_existing(uow)   # workflow instances, SLA clocks, journey enrolments
                lines.append("  flows: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()))
        return lines

    def _generate(self, uow: UnitOfWork, form: str, gen: dict, pools: dict):
        rng = random.Random(f"{gen.get('seed', 1)}:{form}")
        records = uow.runtime.services["records"]
        app = uow.app
        ref_cache: dict[str, list[dict]] = {}
        exprs = {}
        now = uow.now

        def refs(target: str) -> list[dict]:
            if target not in ref_cache:
                t = records.table(app, target)
                fd = records.form(app, target)
                rows = uow.conn.execute(select(t)).mappings().all()
                ref_cache[target] = [records.decode(fd, r) for r in rows]
            return ref_cache[target]

        chosen: dict[str, dict] = {}

        def value(name: str, spec: Any, row: dict, i: int) -> Any:
            if not isinstance(spec, dict):
                return spec
            if "null" in spec and rng.random() < float(spec["null"]):
                return None
            if "const" in spec:
                return spec["const"]
            if "pick" in spec:
                p = spec["pick"]
                if isinstance(p, str):
                    p = _pool(pools, p.format(**{k: v for k, v in row.items() if v is not None}))
                if isinstance(p, dict):
                    keys = list(p)
                    return _key(rng.choices(keys, weights=[float(p[k]) for k in keys])[0])
                item = rng.choice(p)
                if isinstance(item, dict) and "value" not in item:
                    chosen[name] = item       # a structured pool entry: read it with {from: name.key}
                    return None
                return item["value"] if isinstance(item, dict) else item
            if "format" in spec:
                def fill(m):
                    pool = _pool(pools, m.group(1))
                    item = rng.choice(pool)
                    return str(item["value"] if isinstance(item, dict) else item)
                return re.sub(r"\{([\w.]+)\}", fill, spec["format"])
            if "digits" in spec:
                return "".join(str(rng.randint(0, 9)) if ch == "#" else ch for ch in spec["digits"])
            if "seq" in spec:
                return spec["seq"].format(i + 1)
            if "int" in spec:
                lo, hi = spec["int"]
                return rng.randint(int(lo), int(hi))
            if "decimal" in spec:
                lo, hi, places = (list(spec["decimal"]) + [2])[:3]
                return round(rng.uniform(float(lo), float(hi)), int(places))
            if "date" in spec or "datetime" in spec:
                lo, hi = spec.get("date") or spec.get("datetime")
                a, b = now + _offset(lo), now + _offset(hi)
                moment = a + (b - a) * rng.random()
                if "date" in spec:
                    return moment.astimezone(app.tz).date().isoformat()
                return moment.replace(microsecond=0).isoformat()
            if "ref" in spec:
                options = refs(spec["ref"])
                if not options:
                    return None
                rec = rng.choice(options)
                chosen[name] = rec
                return rec["id"]
            if "lookup" in spec:
                target_id = row.get(spec["id"])
                rec = next((r for r in refs(spec["lookup"]) if r["id"] == target_id), None)
                chosen[name] = rec or {}
                return target_id
            if "from" in spec:
                link, _, field = spec["from"].partition(".")
                rec = chosen.get(link)
                v = rec.get(field) if rec else None
                return v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v
            if "expr" in spec:
                if spec["expr"] not in exprs:
                    exprs[spec["expr"]] = compile_expression(spec["expr"])
                env = {k: _parse_dateish(v) for k, v in row.items()}
                v = exprs[spec["expr"]].evaluate(env, uow.eval_context())
                return v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v
            if "generate" in spec:
                return _generate_valid(spec["generate"], rng)
            raise ValueError(f"seed: unknown value spec for '{name}': {spec}")

        fields = gen.get("fields") or {}
        for i in range(int(gen["count"])):
            chosen.clear()
            row: dict[str, Any] = {}
            for name, spec in fields.items():
                row[name] = value(name, spec, row, i)
            yield {k: v for k, v in row.items() if not k.startswith("x_")}   # x_ fields are scratch values


def _pool(pools: dict, path: str) -> Any:
    """``people.surnames`` -> pools['people']['surnames']."""
    node: Any = pools
    for part in path.split("."):
        node = node.get(part, node.get(_key(part))) if isinstance(node, dict) else None
        if node is None:
            raise ValueError(f"seed: no pool '{path}' in seed/pools.yaml")
    return node


def _key(k: Any) -> Any:
    """YAML mapping keys arrive as text; give numbers and true/false back their type."""
    if isinstance(k, str):
        if k in ("true", "True"):
            return True
        if k in ("false", "False"):
            return False
        if k.lstrip("-").isdigit():
            return int(k)
    return k


def _parse_dateish(v: Any) -> Any:
    if isinstance(v, str) and len(v) >= 10 and v[4] == "-" and v[7] == "-":
        try:
            return dt.datetime.fromisoformat(v) if len(v) > 10 else dt.date.fromisoformat(v)
        except ValueError:
            return v
    return v


_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
_VIN_VALUES = {**{str(d): d for d in range(10)}, **dict(zip("ABCDEFGH", range(1, 9))), **dict(zip("JKLMN", range(1, 6))),
               "P": 7, "R": 9, **dict(zip("STUVWXYZ", range(2, 10)))}
_VIN_WEIGHTS = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2]


def _generate_valid(kind: str, rng: random.Random) -> str:
    if kind == "vin":
        body = list(rng.choice(["LSV", "LFV", "LRW", "LGW"]) + "".join(rng.choice(_VIN_CHARS) for _ in range(14)))
        body[8] = "0"
        total = sum(_VIN_VALUES[c] * w for c, w in zip(body, _VIN_WEIGHTS))
        body[8] = "X" if total % 11 == 10 else str(total % 11)
        return "".join(body)
    if kind == "id_card":
        area = rng.choice(["110101", "310115", "440305", "510104", "330106", "320102"])
        birth = dt.date(1960, 1, 1) + dt.timedelta(days=rng.randint(0, 365 * 40))
        body = area + birth.strftime("%Y%m%d") + f"{rng.randint(0, 999):03d}"
        weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
        check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights)) % 11]
        return body + check
    if kind == "plate":
        prov = rng.choice("京沪粤苏浙川鄂湘")
        letter = rng.choice("ABCDEFGH")
        if rng.random() < 0.4:  # new-energy plate: D/F + 5
            return f"{prov}{letter}{rng.choice('DF')}{rng.randint(10000, 99999)}"
        tail = [rng.choice("0123456789") for _ in range(5)]
        for pos in rng.sample(range(5), rng.randint(0, 2)):   # at most two letters, as issued
            tail[pos] = rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ")
        return f"{prov}{letter}{''.join(tail)}"
    raise ValueError(f"seed: cannot generate '{kind}' (vin, id_card, plate)")
