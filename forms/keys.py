"""Re-encrypting personal data under the newest key (``loom keys rotate``).

Add a new key at the end of ``LOOM_SECRET_KEYS`` (``k1=...,k2=...``), run
the rotation, then remove the old key.  Values are re-encrypted in batches,
each batch in its own transaction; the blind index is derived from the first
key and is unchanged, so exact-match search keeps working throughout.
"""
from __future__ import annotations

from sqlalchemy import select, update

BATCH = 1000


def rotate_keys(runtime, app_name: str) -> dict[str, int]:
    records = runtime.services["records"]
    app = runtime.app(app_name)
    ring = runtime.keyring
    counts: dict[str, int] = {}
    for form in app.forms.values():
        pii = [f.name for f in form.fields.values() if f.pii and f.stored]
        if not pii:
            continue
        table = records.table(app, form.name)
        last_id = 0
        done = 0
        while True:
            with runtime.db.write() as conn:
                rows = conn.execute(select(table.c.id, *[table.c[n] for n in pii]).where(table.c.id > last_id)
                                    .order_by(table.c.id).limit(BATCH)).mappings().all()
                for row in rows:
                    values = {n: ring.encrypt(ring.decrypt(row[n])) for n in pii
                              if row[n] is not None and ring.needs_rotation(row[n])}
                    if values:
                        conn.execute(update(table).where(table.c.id == row["id"]).values(**values))
                        done += 1
            if len(rows) < BATCH:
                break
            last_id = rows[-1]["id"]
        counts[form.name] = done
    return counts
