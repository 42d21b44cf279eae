"""Key rotation: old ciphertexts are re-encrypted with the newest key; search keeps working."""
from __future__ import annotations

import base64

from sqlalchemy import text

from engine.crypto import KeyRing
from engine.installer import install
from engine.package import read_package
from forms.keys import rotate_keys
from tests.conftest import FIXTURES

K1 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
K2 = base64.urlsafe_b64encode(b"z" * 32).decode()


def test_rotation_reencrypts_and_search_still_works(db_url, make_runtime, monkeypatch):
    rt = make_runtime(db_url)
    install(rt, read_package(FIXTURES / "mini_app"))
    from tests.conftest import ApiClient
    api = ApiClient(rt)
    h = api.user("root", ["admin"])
    api.http.post("/api/apps/mini/customer", json={"name": "甲", "phone": "13700000001"}, headers=h)
    rt._keyring = KeyRing.from_environment_text(f"k1={K1}\nk2={K2}\n")
    assert rotate_keys(rt, "mini") == {"customer": 1}
    with rt.db.read() as conn:
        stored = conn.execute(text('SELECT phone FROM "mini__customer"')).scalar()
    assert stored.startswith("k2:")
    assert rotate_keys(rt, "mini") == {"customer": 0}
    found = api.http.get("/api/apps/mini/customer?phone=13700000001", headers=h).json()
    assert found["total"] == 1 and found["items"][0]["phone"] == "13700000001"
