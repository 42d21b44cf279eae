"""The analyst studio: edit an installed app's package files in the browser.

* problems as you type: the package is compiled with the edited file
  (``compile_package`` on a copy of the ``SourcePackage``) and the problems of
  that file come back with line/col -- the very positions ``loom validate``
  prints, because it is the same function;
* schema-aware completion from the JSON Schemas in ``engine/schemas/``;
* preview a form as it will render, without saving;
* the migration plan (``install(..., dry_run=True)``);
* publish: bump the patch version in ``app.yaml`` (``round_trip_dump`` keeps
  comments and key order) and ``install``.

Only users with ``manage_app`` (or the admin role) may use it.
"""
from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engine.audit import audit
from engine.definitions import compile_package
from engine.errors import Forbidden, NotFound
from engine.installer import InstallError, _bump, install
from engine.package import SourcePackage
from engine.problems import DefinitionError
from engine.schema_check import schema_for
from engine.uow import UnitOfWork
from engine.yamlpos import YamlSyntaxError, round_trip_dump

from ..deps import install_guard
from .common import PageError, PageRoute, fragment, lang_of, page_user, render, runtime
from .i18n import label, translate
from .shell import has_permission

router = APIRouter(route_class=PageRoute, include_in_schema=False)
TEXT_SUFFIXES = (".yaml", ".yml", ".j2", ".json", ".md", ".txt", ".csv")
MAX_TEXT = 2 * 1024 * 1024
KINDS = {"forms": "form", "flows": "flow", "rules": "rules", "reports": "reports"}


def _guard(request: Request, app_name: str):
    user = page_user(request)
    rt = runtime(request)
    if not has_permission(rt, user, "manage_app", app_name):
        raise Forbidden("the studio needs the 'manage_app' permission")
    try:
        app = rt.app(app_name)
    except Exception:  # noqa: BLE001
        raise NotFound(app_name) from None
    return user, rt, app


def _edited(app, file: str, text: str) -> SourcePackage:
    if not file or file.startswith("/") or ".." in file.split("/"):
        raise PageError(400, "bad file name")
    if len(text.encode()) > MAX_TEXT:
        raise PageError(413, "file too large")
    files = dict(app.package.files)
    files[file] = text.encode("utf-8")
    return SourcePackage(files, app.package.origin)


async def _body(request: Request) -> tuple[str, str]:
    data = await request.json() if "json" in request.headers.get("content-type", "") else dict(await request.form())
    return str(data.get("file") or ""), str(data.get("text") or "")


def schema_kind(file: str) -> str | None:
    if file == "app.yaml":
        return "app"
    folder = file.split("/", 1)[0]
    if file.endswith((".yaml", ".yml")) and file.count("/") == 1:
        return KINDS.get(folder)
    return None


@router.get("/studio/{app_name}")
def studio_page(app_name: str, request: Request):
    user, rt, app = _guard(request, app_name)
    lang = lang_of(request, user, app.default_language)
    files = sorted(p for p in app.package.files if p.endswith(TEXT_SUFFIXES))
    current = request.query_params.get("file") or ("app.yaml" if "app.yaml" in files else (files[0] if files else ""))
    if current not in app.package.files:
        raise NotFound(current)
    try:
        text = app.package.text(current)
    except UnicodeDecodeError:
        text = ""
    groups: dict[str, list] = {}
    for f in files:
        groups.setdefault(f.split("/", 1)[0] if "/" in f else "", []).append(f)
    base = f"/studio/{app_name}"
    return render(request, "studio/studio.html", {
        "app_name": app_name, "groups": groups, "current": current, "doc": text, "version": app.version,
        "base": base, "is_form": current.startswith("forms/") and current.count("/") == 1,
        "app_label": label(app.title, lang, app.name),
        "strings": {k: translate(k, lang) for k in ("no_problems", "checking", "problems", "publish_confirm",
                                                    "cannot_preview", "preview_only_forms")},
    })


@router.post("/studio/{app_name}/_lint")
async def lint(app_name: str, request: Request):
    """Problems of the edited file (line/col as ``loom validate``), and a count for the others."""
    user, rt, app = _guard(request, app_name)
    file, text = await _body(request)
    pkg = _edited(app, file, text)
    try:
        compile_package(pkg)
        problems = []
    except DefinitionError as exc:
        problems = exc.problems
    mine = [{"line": p.line, "col": p.col, "message": p.message, "severity": "error", "where": str(p)}
            for p in problems if p.file == file]
    others = [str(p) for p in problems if p.file != file]
    return JSONResponse({"file": file, "problems": mine, "others": others[:20], "other_count": len(others)})


# ---------------------------------------------------------------------------
# completion from the JSON Schemas

def _resolve(schema: dict, node: Any, depth: int = 0) -> list[dict]:
    """A schema node -> the list of alternatives it stands for ($ref, allOf/anyOf/oneOf flattened)."""
    if not isinstance(node, dict) or depth > 12:
        return []
    out = []
    if "$ref" in node and node["$ref"].startswith("#/"):
        target: Any = schema
        for part in node["$ref"][2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        out += _resolve(schema, target, depth + 1)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key) or []:
            out += _resolve(schema, sub, depth + 1)
    rest = {k: v for k, v in node.items() if k not in ("$ref", "allOf", "anyOf", "oneOf")}
    if rest:
        out.append(rest)
    return out


def _child(schema: dict, nodes: list[dict], seg: str) -> list[dict]:
    out = []
    for n in nodes:
        if seg == "-":
            if isinstance(n.get("items"), dict):
                out += _resolve(schema, n["items"])
            continue
        props = n.get("properties") or {}
        if seg in props:
            out += _resolve(schema, props[seg])
            continue
        matched = False
        for pat, sub in (n.get("patternProperties") or {}).items():
            if re.search(pat, seg):
                out += _resolve(schema, sub)
                matched = True
        if not matched and isinstance(n.get("additionalProperties"), dict):
            out += _resolve(schema, n["additionalProperties"])
        if not matched and isinstance(n.get("items"), dict):   # '- key:' lines give no '-' segment
            out += _child(schema, _resolve(schema, n["items"]), seg)
    return out


def completions(kind: str, path: list[str], key: str | None) -> list[dict]:
    schema = schema_for(kind)
    nodes = _resolve(schema, schema)
    for seg in path:
        nodes = _child(schema, nodes, str(seg))
        if not nodes:
            return []
    if key:                               # completing the value of `key:`
        values: list = []
        for n in _child(schema, nodes, key):
            values += [v for v in n.get("enum") or [] if v is not None]
            if "const" in n:
                values.append(n["const"])
            if n.get("type") == "boolean":
                values += [True, False]
        seen, out = set(), []
        for v in values:
            text = "true" if v is True else "false" if v is False else str(v)
            if text not in seen:
                seen.add(text)
                out.append({"label": text, "type": "enum"})
        return out
    out, seen = [], set()
    for n in nodes:
        for name, sub in (n.get("properties") or {}).items():
            if name in seen:
                continue
            seen.add(name)
            desc = ""
            for alt in _resolve(schema, sub):
                desc = alt.get("description") or alt.get("title") or desc
            out.append({"label": name, "type": "property", "detail": desc[:60], "apply": name + ": "})
        if n.get("items") and not n.get("properties"):
            for alt in _resolve(schema, n["items"]):
                for name in alt.get("properties") or {}:
                    if name not in seen:
                        seen.add(name)
                        out.append({"label": name, "type": "property", "apply": name + ": "})
    return out


@router.post("/studio/{app_name}/_complete")
async def complete(app_name: str, request: Request):
    _guard(request, app_name)
    data = await request.json()
    file = str(data.get("file") or "")
    kind = schema_kind(file)
    if kind is None:
        return JSONResponse([])
    path = [str(p) for p in (data.get("path") or []) if p is not None][:20]
    before = str(data.get("before") or "")
    m = re.match(r"^\s*(?:-\s+)?([A-Za-z_][\w-]*):\s+\S*$", before)
    key = m.group(1) if m else None
    if before.strip().startswith("- ") and not m:
        path = path + ["-"]
    return JSONResponse(completions(kind, path, key))


# ---------------------------------------------------------------------------
# preview, plan, publish

@router.post("/studio/{app_name}/_preview")
async def preview(app_name: str, request: Request):
    """The form page as it will render from the edited definition -- nothing is saved."""
    user, rt, app = _guard(request, app_name)
    lang = lang_of(request, user, app.default_language)
    file, text = await _body(request)
    if not (file.startswith("forms/") and file.count("/") == 1):
        return fragment(request, "studio/_preview.html", {"lang": lang, "message": translate("preview_only_forms", lang)})
    pkg = _edited(app, file, text)
    try:
        new = compile_package(pkg)
    except DefinitionError as exc:
        return fragment(request, "studio/_preview.html", {"lang": lang, "message": translate("cannot_preview", lang),
                                                          "problems": [str(p) for p in exc.problems if p.file == file][:10]})
    name = file.rsplit("/", 1)[1].rsplit(".", 1)[0]
    form = new.forms.get(name)
    if form is None:
        return fragment(request, "studio/_preview.html", {"lang": lang, "message": translate("cannot_preview", lang)})
    from .records import build_form, defaults
    with rt.db.read() as conn:
        uow = UnitOfWork(rt, conn, new, user, rt.clock.now(), lang=lang)
        try:
            values = defaults(uow, form)
        except Exception:  # noqa: BLE001
            values = {}
        data = build_form(uow, form, lang, values, [], None)
    return fragment(request, "studio/_preview.html", {"lang": lang, "form_label": label(form.label, lang, form.name),
                                                      "app_name": app_name, "form": form, **data})


@router.post("/studio/{app_name}/_plan")
async def plan(app_name: str, request: Request):
    user, rt, app = _guard(request, app_name)
    file, text = await _body(request)
    pkg = _bumped(_edited(app, file, text), app.version)
    try:
        report = install(rt, pkg, actor=user.username, dry_run=True, authorize=install_guard(user, only=app_name))
    except DefinitionError as exc:
        return JSONResponse({"ok": False, "problems": [str(p) for p in exc.problems]})
    except (InstallError, Forbidden) as exc:
        return JSONResponse({"ok": False, "problems": [str(exc)]}, status_code=403 if isinstance(exc, Forbidden) else 200)
    return JSONResponse({"ok": True, "lines": report.lines(), "destructive": any(c.destructive for c in report.changes)})


def _bumped(pkg: SourcePackage, installed_version: str) -> SourcePackage:
    """The package with app.yaml's version one patch above the installed one
    (unless the analyst already raised it), comments and key order kept."""
    text = pkg.text("app.yaml")
    target = _bump(installed_version)

    def update(tree):
        current = str(tree.get("version", ""))
        if current == installed_version or not current:
            tree["version"] = target

    try:
        new_text = round_trip_dump(text, update)
    except Exception as exc:  # noqa: BLE001 - a broken app.yaml is reported by compile
        if isinstance(exc, YamlSyntaxError):
            return pkg
        return pkg
    files = dict(pkg.files)
    files["app.yaml"] = new_text.encode("utf-8")
    return SourcePackage(files, pkg.origin)


@router.post("/studio/{app_name}/_publish")
async def publish(app_name: str, request: Request):
    user, rt, app = _guard(request, app_name)
    lang = lang_of(request, user, app.default_language)
    data = await request.json()
    file, text = str(data.get("file") or ""), str(data.get("text") or "")
    pkg = _bumped(_edited(app, file, text), app.version)
    try:
        report = install(rt, pkg, actor=user.username, allow_drop=bool(data.get("allow_drop")),
                         authorize=install_guard(user, only=app_name))
    except DefinitionError as exc:
        return JSONResponse({"ok": False, "problems": [str(p) for p in exc.problems]}, status_code=422)
    except (InstallError, Forbidden) as exc:
        return JSONResponse({"ok": False, "problems": [str(exc)]}, status_code=403 if isinstance(exc, Forbidden) else 422)
    with rt.db.write() as conn:
        audit(conn, rt.clock.now(), user.username, "studio.publish", app=app_name,
              details={"file": file, "version": report.version, "previous": report.previous})
    return JSONResponse({"ok": True, "version": report.version, "lines": report.lines(),
                         "message": translate("published", lang, v=report.version),
                         "app_yaml": pkg.text("app.yaml") if file == "app.yaml" else None})
