"""Uploads, downloads and file fields on records, through the JSON API (both databases)."""
from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from sqlalchemy import select, text

from engine import platform as P
from engine.installer import install
from engine.package import read_package

APP = {
    "app.yaml": """
name: docs
version: 1.0.0
title: {zh: 资料, en: Docs}
timezone: Asia/Shanghai
roles:
  admin: {label: {zh: 管理员, en: Admin}}
  agent: {label: {zh: 坐席, en: Agent}}
  viewer: {label: {zh: 只读, en: Viewer}}
""",
    "forms/claim.yaml": """
name: claim
label: {zh: 理赔, en: Claim}
title_field: title
fields:
  title: {type: text, required: true}
  photos: {type: image, label: {zh: 照片, en: Photos}, multiple: true, max: 3, max_size: 4KB}
  report: {type: attachment, label: {zh: 报告, en: Report}, accept: [application/pdf, .docx], max_size: 64KB}
  secret: {type: attachment, label: {zh: 内部材料, en: Internal}}
  note: {type: text}
access:
  - roles: [agent]
    actions: [create, read, update]
    rows: "created_by == current_user.name"
    hidden: [secret]
  - roles: [viewer]
    actions: [read]
""",
    "forms/memo.yaml": """
name: memo
label: {zh: 备忘, en: Memo}
title_field: subject
fields:
  subject: {type: text}
  photos: {type: image, multiple: true}
""",
}

PNG = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89" + b"\0" * 40
PDF = b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
EXE = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff" + b"\0" * 100
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def _docx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document/>")
    return buf.getvalue()


@pytest.fixture
def files_dir(tmp_path, monkeypatch):
    d = tmp_path / "store"
    monkeypatch.setenv("LOOM_FILES_DIR", str(d))
    return d


@pytest.fixture
def h(api, package_dir, files_dir):
    install(api.rt, read_package(package_dir(APP)))
    return {"admin": api.user("root", ["admin"]), "amy": api.user("amy", ["agent"]), "bob": api.user("bob", ["agent"]),
            "vic": api.user("vic", ["viewer"]), "out": api.user("outsider", [])}


def upload(api, headers, body: bytes, name="a.png", ctype="image/png", field="photos", form="claim"):
    return api.http.post(f"/api/apps/docs/{form}/_files?field={field}", files={"file": (name, body, ctype)}, headers=headers)


def stored(files_dir) -> list:
    return sorted(p for p in files_dir.rglob("*") if p.is_file()) if files_dir.exists() else []


def test_upload_stores_bytes_and_metadata(api, h, files_dir):
    r = upload(api, h["amy"], PNG, name="前门.png")
    assert r.status_code == 201, r.text
    meta = r.json()
    assert meta["name"] == "前门.png" and meta["size"] == len(PNG) and meta["content_type"] == "image/png"
    assert meta["sha256"] == hashlib.sha256(PNG).hexdigest() and meta["url"] == f"/api/files/{meta['id']}"
    with api.rt.db.read() as conn:
        row = conn.execute(select(P.files).where(P.files.c.id == meta["id"])).mappings().one()
    assert row["status"] == "pending" and row["created_by"] == "amy" and (row["form"], row["field"]) == ("claim", "photos")
    on_disk = files_dir / row["path"]
    assert on_disk.read_bytes() == PNG and "前门" not in row["path"] and ".png" not in row["path"]
    assert [p for p in stored(files_dir) if ".tmp" not in p.parts] == [on_disk]


def test_upload_declared_type_is_not_trusted(api, h):
    r = upload(api, h["amy"], _docx(), name="report.docx", ctype="application/octet-stream", field="report")
    assert r.status_code == 201, r.text
    # the client said nothing useful; the bytes are a zip and the name says docx, which a zip may be
    assert r.json()["content_type"] == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    r = upload(api, h["amy"], _docx(), name="report.pdf", ctype="application/pdf", field="report")
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "file_type_mismatch"
    r = upload(api, h["amy"], PDF, name="report.pdf", ctype="application/pdf", field="report")
    assert r.status_code == 201 and r.json()["content_type"] == "application/pdf"


@pytest.mark.parametrize("body,name,ctype,code", [
    (EXE, "photo.png", "image/png", "file_type_mismatch"),           # an .exe declared image/png
    (HTML, "photo.png", "image/png", "file_type_mismatch"),          # HTML renamed .png
    (HTML, "photo", "application/octet-stream", "file_type_blocked"),
    (SVG, "logo.svg", "image/svg+xml", "file_type_blocked"),
    (b"just some text", "notes.txt", "text/plain", "not_an_image"),
    (PDF, "scan.jpg", "image/jpeg", "file_type_mismatch"),
])
def test_upload_wrong_type_is_refused_and_leaves_nothing(api, h, files_dir, body, name, ctype, code):
    r = upload(api, h["amy"], body, name=name, ctype=ctype)
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert err["code"] == code and err["field"] == "photos" and name in err["message"]
    assert stored(files_dir) == []
    with api.rt.db.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM loom_files")).scalar() == 0


def test_upload_not_accepted_by_field(api, h, files_dir):
    r = upload(api, h["amy"], PNG, name="a.png", field="report")        # report accepts PDF and .docx
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "file_type"
    en = api.http.post("/api/apps/docs/claim/_files?field=report&lang=en", files={"file": ("a.png", PNG, "image/png")},
                       headers=h["amy"])
    assert "not accepted" in en.json()["errors"][0]["message"]
    assert stored(files_dir) == []


def test_upload_too_large_stops_streaming(api, h, files_dir):
    big = PNG + b"\0" * 5000                      # photos: max 4KB
    r = upload(api, h["amy"], big)
    assert r.status_code == 413, r.text
    err = r.json()["errors"][0]
    assert err["code"] == "file_too_large" and err["max_size"] == 4096 and "4KB" in err["message"]
    assert stored(files_dir) == []

    # without a Content-Length the limit is enforced while the body streams in
    def body():
        boundary = b"XyZ"
        yield b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\nContent-Type: image/png\r\n\r\n"
        yield PNG
        for _ in range(10):
            yield b"\0" * 1024
        yield b"\r\n--" + boundary + b"--\r\n"
    r = api.http.post("/api/apps/docs/claim/_files?field=photos", content=body(),
                      headers={**h["amy"], "Content-Type": "multipart/form-data; boundary=XyZ"})
    assert r.status_code == 413 and r.json()["errors"][0]["code"] == "file_too_large"
    assert stored(files_dir) == []


def test_upload_bad_requests(api, h):
    assert upload(api, h["amy"], PNG, field="nope").json()["errors"][0]["code"] == "unknown_field"
    assert upload(api, h["amy"], PNG, field="title").json()["errors"][0]["code"] == "not_a_file_field"
    assert upload(api, h["amy"], PNG, form="nope").status_code == 404
    r = api.http.post("/api/apps/docs/claim/_files?field=photos", files={"other": ("a.png", PNG, "image/png")}, headers=h["amy"])
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "missing_file"
    r = api.http.post("/api/apps/docs/claim/_files?field=photos", json={"file": "x"}, headers=h["amy"])
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "not_multipart"
    assert upload(api, h["amy"], b"", name="empty.pdf", ctype="application/pdf", field="report").status_code == 422


def test_upload_needs_permission(api, h):
    assert upload(api, {}, PNG).status_code == 401
    assert upload(api, h["vic"], PNG).status_code == 403                     # read-only role
    assert upload(api, h["amy"], PDF, name="x.pdf", ctype="application/pdf", field="secret").status_code == 403   # hidden field
    assert upload(api, h["out"], PNG).status_code == 404                     # not a user of the app
    assert upload(api, h["admin"], PDF, name="x.pdf", ctype="application/pdf", field="secret").status_code == 201


def test_record_takes_file_metadata_from_the_store(api, h):
    meta = upload(api, h["amy"], PNG, name="door.png").json()
    forged = {"id": meta["id"], "name": "evil.exe", "size": 1, "content_type": "application/x-msdownload", "sha256": "0" * 64}
    r = api.http.post("/api/apps/docs/claim", json={"title": "t1", "photos": [forged]}, headers=h["amy"])
    assert r.status_code == 201, r.text
    photos = r.json()["photos"]
    assert photos == [{"id": meta["id"], "name": "door.png", "size": len(PNG), "content_type": "image/png",
                       "sha256": meta["sha256"], "url": meta["url"]}]
    with api.rt.db.read() as conn:
        row = conn.execute(select(P.files).where(P.files.c.id == meta["id"])).mappings().one()
    assert row["status"] == "attached" and row["record_id"] == r.json()["id"]
    # bare ids work too, and keeping a file on an update is fine
    second = upload(api, h["amy"], PNG, name="back.png").json()
    upd = api.http.patch(f"/api/apps/docs/claim/{r.json()['id']}", json={"photos": [meta["id"], str(second["id"])]}, headers=h["amy"])
    assert upd.status_code == 200, upd.text
    assert [p["name"] for p in upd.json()["photos"]] == ["door.png", "back.png"]


def test_download_with_permission(api, h):
    meta = upload(api, h["amy"], PNG, name="门.png").json()
    url = meta["url"]
    mine = api.http.get(url, headers=h["amy"])              # pending: the uploader may look at it
    assert mine.status_code == 200 and mine.content == PNG
    assert api.http.get(url, headers=h["bob"]).status_code == 404
    rec = api.http.post("/api/apps/docs/claim", json={"title": "t", "photos": [meta["id"]]}, headers=h["amy"]).json()
    r = api.http.get(url, headers=h["vic"])                 # viewer reads every claim
    assert r.status_code == 200 and r.content == PNG
    assert r.headers["content-type"] == "image/png" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"].startswith("inline;") and "%E9%97%A8.png" in r.headers["content-disposition"]
    assert api.http.get(url + "?download=1", headers=h["vic"]).headers["content-disposition"].startswith("attachment;")
    assert api.http.get(url, headers=h["bob"]).status_code == 404       # bob can't read amy's claim
    assert api.http.get(url, headers=h["out"]).status_code == 404
    assert api.http.get(url).status_code == 401
    assert api.http.get("/api/files/99999", headers=h["admin"]).status_code == 404
    pdf = upload(api, h["amy"], PDF, name="r.pdf", ctype="application/pdf", field="report").json()
    api.http.patch(f"/api/apps/docs/claim/{rec['id']}", json={"report": [pdf["id"]]}, headers=h["amy"])
    d = api.http.get(pdf["url"], headers=h["vic"])
    assert d.status_code == 200 and d.headers["content-disposition"].startswith("attachment;")
    # taken off the record: no longer downloadable through it
    api.http.patch(f"/api/apps/docs/claim/{rec['id']}", json={"photos": None}, headers=h["amy"])
    assert api.http.get(url, headers=h["vic"]).status_code == 404


def test_hidden_field_files_are_not_downloadable(api, h):
    meta = upload(api, h["admin"], PDF, name="x.pdf", ctype="application/pdf", field="secret").json()
    rec = api.http.post("/api/apps/docs/claim", json={"title": "t", "secret": [meta["id"]]}, headers=h["admin"]).json()
    assert api.http.get(meta["url"], headers=h["admin"]).status_code == 200
    assert api.http.get(meta["url"], headers=h["vic"]).status_code == 200          # viewer: secret not hidden
    api.http.patch(f"/api/apps/docs/claim/{rec['id']}", json={"note": "x"}, headers=h["admin"])
    with api.rt.db.write() as conn:
        conn.execute(text("UPDATE docs__claim SET created_by = 'amy'"))
    assert api.http.get(meta["url"], headers=h["amy"]).status_code == 404         # amy reads the claim, but not 'secret'


def test_cannot_attach_someone_elses_file(api, h):
    amy_file = upload(api, h["amy"], PNG).json()
    r = api.http.post("/api/apps/docs/claim", json={"title": "steal", "photos": [amy_file["id"]]}, headers=h["bob"])
    assert r.status_code == 422
    err = r.json()["errors"][0]
    assert err["field"] == "photos" and err["code"] == "file_not_found" and str(amy_file["id"]) in err["message"]
    # attached to amy's record: still not bob's to put on his own record
    api.http.post("/api/apps/docs/claim", json={"title": "mine", "photos": [amy_file["id"]]}, headers=h["amy"])
    again = api.http.post("/api/apps/docs/claim", json={"title": "steal2", "photos": [amy_file["id"]]}, headers=h["bob"])
    assert again.status_code == 422 and again.json()["errors"][0]["code"] == "file_not_found"
    # nor amy's own file on a second record
    twice = api.http.post("/api/apps/docs/claim", json={"title": "twice", "photos": [amy_file["id"]]}, headers=h["amy"])
    assert twice.status_code == 422


def test_file_ids_are_checked_per_field(api, h):
    photo = upload(api, h["amy"], PNG).json()
    memo_photo = upload(api, h["amy"], PNG, form="memo").json()
    r = api.http.post("/api/apps/docs/claim", json={"title": "t", "photos": [photo["id"], 424242],
                                                    "report": [photo["id"]]}, headers=h["amy"])
    assert r.status_code == 422
    errors = {e["field"]: e for e in r.json()["errors"]}
    assert set(errors) == {"photos", "report"}
    assert "424242" in errors["photos"]["message"] and str(photo["id"]) not in errors["photos"]["message"]
    other_form = api.http.post("/api/apps/docs/claim", json={"title": "t", "photos": [memo_photo["id"]]}, headers=h["amy"])
    assert other_form.status_code == 422 and other_form.json()["errors"][0]["field"] == "photos"
    junk = api.http.post("/api/apps/docs/claim", json={"title": "t", "photos": ["abc"]}, headers=h["amy"])
    assert junk.status_code == 422 and junk.json()["errors"][0]["field"] == "photos"
    with api.rt.db.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM docs__claim")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM loom_files WHERE status = 'attached'")).scalar() == 0


def test_resolving_is_one_query_and_forms_without_files_pay_nothing(api, h):
    from sqlalchemy import event
    ids = [upload(api, h["amy"], PNG, name=f"{i}.png").json()["id"] for i in range(3)]
    seen: list[str] = []

    def count(conn, cursor, statement, *a):
        if "loom_files" in statement:
            seen.append(statement)
    event.listen(api.rt.db.engine, "before_cursor_execute", count)
    try:
        assert api.http.post("/api/apps/docs/claim", json={"title": "t", "photos": ids}, headers=h["amy"]).status_code == 201
        assert [s.split()[0] for s in seen] == ["SELECT", "UPDATE"]
        seen.clear()
        assert api.http.post("/api/apps/docs/claim", json={"title": "plain"}, headers=h["amy"]).status_code == 201
        assert seen == []
    finally:
        event.remove(api.rt.db.engine, "before_cursor_execute", count)


def test_imports_refuse_file_columns(api, h):
    csv = "title,photos\nt1,\nt2,[1]\n".encode()
    r = api.http.post("/api/apps/docs/claim/_import?mode=skip", files={"file": ("c.csv", csv, "text/csv")}, headers=h["admin"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["inserted"] == 1
    assert [(e["row"], e["field"], e["code"]) for e in body["errors"]] == [(2, "photos", "files_not_importable")]


def test_abandoned_uploads_are_purged_by_tick(api, h, files_dir, clock):
    import datetime as dt
    kept = upload(api, h["amy"], PNG, name="kept.png").json()
    api.http.post("/api/apps/docs/claim", json={"title": "t", "photos": [kept["id"]]}, headers=h["amy"])
    upload(api, h["amy"], PNG, name="forgotten.png")
    assert len(stored(files_dir)) == 2
    scheduler = api.rt.services["scheduler"]
    assert "uploads_purged" not in scheduler.tick(clock.now() + dt.timedelta(hours=23))
    assert scheduler.tick(clock.now() + dt.timedelta(hours=25))["uploads_purged"] == 1
    with api.rt.db.read() as conn:
        assert [r.name for r in conn.execute(select(P.files.c.name))] == ["kept.png"]
    assert len(stored(files_dir)) == 1
    assert api.http.get(kept["url"], headers=h["amy"]).content == PNG
