"""What the record pages draw for attachment and image fields.

The form widget uploads each chosen file at once to the JSON API
(``POST /api/apps/{app}/{form}/_files``, see ``ui/api/files.py``) and keeps
the ids in a hidden input; saving the form sends those ids through the
record service like any other value.  The detail page lists links, with
thumbnails for images (served by ``GET /api/files/{id}``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.files import file_url
from engine.sniff import inline_safe
from forms.attachments import describe_files
from forms.fieldtypes.files import human_size

from .i18n import translate
from .widgets import file_ids


def file_items(value: Any) -> list[dict]:
    """Stored file metadata -> what a template shows (name, link, size, thumbnail or not)."""
    out = []
    for item in value or []:
        if not isinstance(item, Mapping) or item.get("id") is None:
            continue
        ct = str(item.get("content_type") or "")
        size = item.get("size")
        out.append({"id": item["id"], "name": str(item.get("name") or item["id"]), "url": file_url(item["id"]),
                    "size": human_size(size) if isinstance(size, int) else "", "thumb": inline_safe(ct)})
    return out


def file_widget(uow, form, f, fv: dict, merged: Mapping, lang: str) -> None:
    """Fill ``fv`` (one field of ``records/_fields.html``) for the upload widget."""
    ids = file_ids(fv.get("value"))
    current = merged.get(f.name)
    if isinstance(current, list) and file_ids(current) == ids and all(isinstance(i, Mapping) and "name" in i for i in current):
        files = current                     # the stored value: no lookup needed
    else:                                   # ids just submitted: only those the user may really use
        files = describe_files(uow, form, f.name, ids, merged.get("id"))
    accept = f.ftype.accept(f.spec)
    fv.update(
        value=json.dumps(file_ids(files)),
        files=file_items(files),
        image=f.type == "image",
        multiple=bool(f.spec.get("multiple")),
        max_files=f.ftype.max_files(f.spec),
        accept=",".join(accept),
        upload_url=f"/api/apps/{uow.app.name}/{form.name}/_files?field={f.name}",
        limit_text=translate("file_limits", lang, size=human_size(f.ftype.max_size(f.spec))),
    )
