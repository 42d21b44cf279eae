"""OpenAPI with each installed form's real fields.

The record routes are generic (``/api/apps/{app}/{form}``), so FastAPI alone
would document a body of "any object".  Here every installed form also gets
concrete paths (``/api/apps/automotive_crm/lead``...) whose schemas come from
the field types' JSON Schema fragments, so ``/docs`` shows real field names,
types, enums and bounds.  Rebuilt only when an app's digest changes.
"""
from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERRORS = {"type": "object", "properties": {"errors": {"type": "array", "items": {
    "type": "object", "properties": {"field": {"type": ["string", "null"]}, "code": {"type": "string"},
                                     "message": {"type": "string"}}, "required": ["field", "code", "message"]}}}}
SYSTEM = {"id": {"type": "integer", "readOnly": True}, "created_at": {"type": "string", "format": "date-time", "readOnly": True},
          "updated_at": {"type": "string", "format": "date-time", "readOnly": True},
          "created_by": {"type": ["string", "null"], "readOnly": True}, "owner": {"type": ["string", "null"]},
          "state": {"type": ["string", "null"], "readOnly": True}}


def form_schema(form: Any, for_input: bool) -> dict:
    props: dict[str, Any] = {} if for_input else dict(SYSTEM)
    required = []
    for name, f in form.fields.items():
        if for_input and f.readonly:
            continue
        try:
            schema = f.ftype.json_schema(dict(f.spec))
        except Exception:  # noqa: BLE001 - a type without a schema is documented as "any"
            schema = {}
        if f.type == "child_table":
            schema = {"type": "array", "items": {"$ref": f"#/components/schemas/{form.app}.{f.target_form}.input"}}
        label = f.label
        schema = {**schema, "title": label.get("en") or name, "description": label.get("zh") or ""}
        props[name] = schema
        if for_input and f.required:
            required.append(name)
    out = {"type": "object", "properties": props}
    if required and for_input:
        out["required"] = required
    return out


def install_openapi(app: FastAPI) -> None:
    cache: dict[str, Any] = {}

    def openapi() -> dict:
        rt = app.state.runtime
        names = rt.app_names()
        apps = [rt.app(n) for n in names]
        key = "|".join(a.digest for a in apps)
        if cache.get("key") == key:
            return cache["doc"]
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["RecordErrors"] = ERRORS
        for a in apps:
            for form in a.forms.values():
                base = f"{a.name}.{form.name}"
                schemas[base] = form_schema(form, for_input=False)
                schemas[base + ".input"] = form_schema(form, for_input=True)
                ref = {"$ref": f"#/components/schemas/{base}"}
                body = {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{base}.input"}}}}
                invalid = {"description": "invalid input, per field", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecordErrors"}}}}
                tag = f"{a.name}: {form.label.get('en') or form.name}"
                sec = [{"OAuth2PasswordBearer": []}]
                doc["paths"][f"/api/apps/{a.name}/{form.name}"] = {
                    "get": {"tags": [tag], "summary": f"List {form.name}", "security": sec,
                            "parameters": [{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                                           for n in ("q", "limit", "offset", "order")],
                            "responses": {"200": {"description": "a page of records", "content": {"application/json": {"schema": {
                                "type": "object", "properties": {"items": {"type": "array", "items": ref}, "total": {"type": ["integer", "null"]}}}}}}}},
                    "post": {"tags": [tag], "summary": f"Create {form.name}", "security": sec, "requestBody": body,
                             "responses": {"201": {"description": "created", "content": {"application/json": {"schema": ref}}}, "422": invalid}},
                }
                idp = [{"name": "record_id", "in": "path", "required": True, "schema": {"type": "integer"}}]
                patch_body = copy.deepcopy(body)
                patch_body["content"]["application/json"]["schema"] = {"type": "object", "properties": schemas[base + ".input"]["properties"]}
                doc["paths"][f"/api/apps/{a.name}/{form.name}/{{record_id}}"] = {
                    "get": {"tags": [tag], "summary": f"Read {form.name}", "security": sec, "parameters": idp,
                            "responses": {"200": {"description": "the record", "content": {"application/json": {"schema": ref}}}, "404": {"description": "not found"}}},
                    "patch": {"tags": [tag], "summary": f"Change {form.name}", "security": sec, "parameters": idp, "requestBody": patch_body,
                              "responses": {"200": {"description": "the record", "content": {"application/json": {"schema": ref}}}, "422": invalid}},
                    "delete": {"tags": [tag], "summary": f"Delete {form.name}", "security": sec, "parameters": idp,
                               "responses": {"204": {"description": "deleted"}}},
                }
        cache.update(key=key, doc=doc)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
