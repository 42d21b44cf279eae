"""Compile step for ``forms/*.yaml``: field types, references, expressions.

Runs after the JSON Schema checks, so shapes are known to be right; this step
checks meaning: unknown field types' options, links to forms that don't
exist, fields named in lists/layouts/indexes that don't exist, expressions
that don't parse or name unknown fields/functions.
"""
from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any, Callable

from engine.definitions import CompileContext, register_step, text
from engine.expressions import ExpressionError, compile_expression
from engine.problems import one_of, suggest

from .fieldtypes import FIELD_TYPES
from .model import SYSTEM_COLUMNS, AccessRule, FieldDef, FormDef, ValidationDef

ROOT_NAMES = ("current_user", "record", "old", "settings", "app", "true", "false", "null", "None", "True", "False")
ALL_ACTIONS = frozenset({"create", "read", "update", "delete", "export", "import"})


def name_checker(forms: dict[str, dict], form: str, extra: tuple[str, ...] = ()) -> Callable[[tuple], str | None]:
    """A ``check_name`` for expressions evaluated on records of ``form``.

    Accepts the form's fields and system columns, one hop through a link
    (``customer.tier``), ``current_user.<anything>``, ``record.<field>``,
    ``old.<field>`` and any ``extra`` root names the caller provides.
    """
    spec = forms.get(form) or {}
    fields = spec.get("fields") or {}
    own = set(fields) | set(SYSTEM_COLUMNS)

    def check(path: tuple) -> str | None:
        head, rest = path[0], path[1:]
        if head in ("current_user", "settings", "app") or head in extra:
            return None
        if head in ("true", "false", "null", "None", "True", "False"):
            return None
        if head in ("record", "old"):
            return check(rest) if rest else None
        if head not in own:
            known = sorted(own) + ["current_user"]
            return f"unknown field '{head}' in form '{form}'{suggest(head, known)}"
        if rest:
            fdef = fields.get(head) or {}
            target = fdef.get("form")
            if fdef.get("type") not in ("link",) or target not in forms:
                return f"'{head}' is not a link field, so '{head}.{rest[0]}' cannot be followed"
            tfields = set((forms[target].get("fields") or {})) | set(SYSTEM_COLUMNS)
            if rest[0] not in tfields:
                return f"unknown field '{rest[0]}' in form '{target}' (via '{head}'){suggest(rest[0], tfields)}"
            if len(rest) > 1:
                return f"'{'.'.join(path)}': links can be followed one level only"
        return None

    return check


def form_specs(ctx: CompileContext) -> dict[str, dict]:
    """name -> raw mapping for every form file that parsed."""
    out = {}
    for src in ctx.yaml_files("forms"):
        if isinstance(src.data, dict):
            name = src.data.get("name") or src.path.rsplit("/", 1)[1].rsplit(".", 1)[0]
            out[name] = src.data
    return out


def _compile(ctx: CompileContext, file: str, path: tuple, source: Any, checker) -> Any:
    if source is None:
        return None
    if not isinstance(source, str):
        source = str(source).lower() if isinstance(source, bool) else str(source)
    try:
        return compile_expression(source, check_name=checker)
    except ExpressionError as exc:
        ctx.error_in_expression(file, path, exc)
        return None


def compile_forms(ctx: CompileContext) -> None:
    app = ctx.app_data.get("name") or "app"
    roles = set((ctx.app_data.get("roles") or {}))
    specs = form_specs(ctx)
    files = {}
    for src in ctx.yaml_files("forms"):
        if isinstance(src.data, dict):
            stem = src.path.rsplit("/", 1)[1].rsplit(".", 1)[0]
            name = src.data.get("name") or stem
            if name != stem:
                ctx.error(src.path, ("name",), f"form name '{name}' must match its file name '{stem}.yaml'")
            files[name] = src
    compiled: dict[str, FormDef] = {}
    for name, src in files.items():
        fd = _compile_form(ctx, app, name, src, specs, roles)
        if fd is not None:
            compiled[name] = fd
    _show_lookup_targets(compiled)
    ctx.out["forms"] = compiled


def _show_lookup_targets(forms: dict[str, FormDef]) -> None:
    """Give each lookup field the spec of the field it shows (``_target_spec``), so its values are
    formatted, exported and typed in JSON as that field's are -- a customer's tier shown on a
    complaint reads 金卡客户, not ``gold``.  Done once all forms are compiled: the target is in
    another form."""
    for name, fd in list(forms.items()):
        fields = dict(fd.fields)
        for fname, f in fd.fields.items():
            if f.type != "lookup":
                continue
            link = fd.fields.get(f.spec.get("via") or "")
            target_form = forms.get(link.target_form or "") if link is not None else None
            target = target_form.fields.get(f.spec.get("field") or "") if target_form is not None else None
            if target is not None and target.type != "lookup":
                fields[fname] = replace(f, spec=MappingProxyType({**f.spec, "_target_spec": target.spec}))
        if fields != dict(fd.fields):
            forms[name] = replace(fd, fields=MappingProxyType(fields))


def _compile_form(ctx, app, name, src, specs, roles) -> FormDef | None:
    file, data = src.path, src.data
    fields_raw = data.get("fields") or {}
    if not isinstance(fields_raw, dict):
        return None
    checker = name_checker(specs, name)
    field_names = set(fields_raw)
    all_cols = field_names | set(SYSTEM_COLUMNS)
    fields: dict[str, FieldDef] = {}
    for fname, fspec in fields_raw.items():
        if not isinstance(fspec, dict):
            continue
        base = ("fields", fname)
        if fname in SYSTEM_COLUMNS:
            ctx.error(file, base, f"field '{fname}' is a system column every record has "
                      f"({', '.join(SYSTEM_COLUMNS)}); remove it or choose another name", at_key=True)
            continue
        ftype = FIELD_TYPES.get(fspec.get("type"))
        if ftype is None:
            continue  # reported by the schema check
        for sub, msg in ftype.check_definition(fspec) or []:
            ctx.error(file, base + tuple(sub), f"field '{fname}': {msg}")
        target = fspec.get("form")
        if fspec.get("type") in ("link", "child_table"):
            if not target:
                ctx.error(file, base, f"field '{fname}': a {fspec['type']} field needs 'form: <form name>'", at_key=True)
            elif target not in specs:
                ctx.error(file, base + ("form",), f"field '{fname}': unknown form '{target}'{suggest(target, specs) or '; ' + one_of(specs)}")
        if fspec.get("type") == "lookup":
            via = fspec.get("via")
            vspec = fields_raw.get(via) if via else None
            if not via or not isinstance(vspec, dict) or vspec.get("type") != "link":
                ctx.error(file, base + (("via",) if via else ()), f"field '{fname}': 'via' must name a link field of this form"
                          + (suggest(via, [k for k, v in fields_raw.items() if isinstance(v, dict) and v.get('type') == 'link']) if via else ""))
            elif vspec.get("form") in specs:
                tf = set((specs[vspec["form"]].get("fields") or {})) | set(SYSTEM_COLUMNS)
                if fspec.get("field") not in tf:
                    ctx.error(file, base + ("field",), f"field '{fname}': unknown field '{fspec.get('field')}' in form '{vspec['form']}'{suggest(fspec.get('field'), tf)}")
        if fspec.get("options_file") and fspec["options_file"] not in ctx.package.files:
            ctx.error(file, base + ("options_file",), f"field '{fname}': file '{fspec['options_file']}' is not in the package")
        if fspec.get("depends_on") and fspec["depends_on"] not in field_names:
            ctx.error(file, base + ("depends_on",), f"field '{fname}': unknown field '{fspec['depends_on']}'{suggest(fspec['depends_on'], field_names)}")
        unique = fspec.get("unique", False)
        if isinstance(unique, list):
            for i, scope in enumerate(unique):
                if scope not in all_cols:
                    ctx.error(file, base + ("unique", i), f"field '{fname}': unique scope '{scope}' is not a field{suggest(scope, all_cols)}")
            unique = tuple(unique)
        if fspec.get("renamed_from") and fspec["renamed_from"] in field_names:
            ctx.error(file, base + ("renamed_from",), f"field '{fname}': renamed_from '{fspec['renamed_from']}' is still a field of this form")
        exprs = {}
        for key in ("required_when", "visible_when", "readonly_when", "formula"):
            if key in fspec:
                exprs[key] = _compile(ctx, file, base + (key,), fspec[key], checker)
        default = None
        if "default" in fspec and fspec["default"] is not None:
            d = fspec["default"]
            default = _compile(ctx, file, base + ("default",), d if isinstance(d, str) else repr(d) if not isinstance(d, bool) else str(d), checker)
        line, col = src.loaded.position(base, prefer_key=True)
        fields[fname] = FieldDef(
            name=fname, type=fspec["type"], spec=MappingProxyType(dict(fspec)), label=text(fspec.get("label") or fname),
            ftype=ftype, required=bool(fspec.get("required")), readonly=bool(fspec.get("readonly")) or fspec["type"] in ("formula", "lookup", "auto_number"),
            pii=bool(fspec.get("pii")), unique=unique, index=bool(fspec.get("index")), renamed_from=fspec.get("renamed_from"),
            required_when=exprs.get("required_when"), visible_when=exprs.get("visible_when"),
            readonly_when=exprs.get("readonly_when"), formula=exprs.get("formula"), default=default, position=(file, line, col))

    def check_fields(path: tuple, names, what: str, allow_system: bool = True):
        pool = all_cols if allow_system else field_names
        for i, n in enumerate(names or []):
            if n not in pool:
                ctx.error(file, path + (i,), f"{what}: unknown field '{n}'{suggest(n, pool) or '; ' + one_of(pool)}")

    title = data.get("title_field") or next(iter(fields_raw), "id")
    if title not in all_cols:
        ctx.error(file, ("title_field",), f"unknown field '{title}'{suggest(title, all_cols)}")
    indexes = []
    for i, idx in enumerate(data.get("indexes") or []):
        check_fields(("indexes", i), idx, "index")
        indexes.append(tuple(idx))
    lst = data.get("list") or {}
    check_fields(("list", "columns"), lst.get("columns"), "list column")
    check_fields(("list", "search"), lst.get("search"), "search")
    check_fields(("list", "filters"), lst.get("filters"), "list filter")
    order = lst.get("order") or "-created_at"
    if order.lstrip("-") not in all_cols:
        ctx.error(file, ("list", "order"), f"list order: unknown field '{order.lstrip('-')}'{suggest(order.lstrip('-'), all_cols)}")
    check_fields(("duplicate_check",), data.get("duplicate_check"), "duplicate_check")
    for i, item in enumerate(data.get("layout") or []):
        check_fields(("layout", i, "fields"), item.get("fields"), "layout", allow_system=False)
    validations = []
    for i, v in enumerate(data.get("validations") or []):
        if v.get("field") and v["field"] not in all_cols:
            ctx.error(file, ("validations", i, "field"), f"validation: unknown field '{v['field']}'{suggest(v['field'], all_cols)}")
        rule = _compile(ctx, file, ("validations", i, "rule"), v.get("rule"), checker)
        when = _compile(ctx, file, ("validations", i, "when"), v.get("when"), checker)
        if rule is not None:
            validations.append(ValidationDef(rule, v.get("field"), text(v.get("message")), when))
    access = []
    for i, a in enumerate(data.get("access") or []):
        for j, r in enumerate(a.get("roles") or []):
            if r not in roles:
                ctx.error(file, ("access", i, "roles", j), f"unknown role '{r}'{suggest(r, roles) or '; ' + one_of(roles)}")
        check_fields(("access", i, "hidden"), a.get("hidden"), "hidden", allow_system=False)
        check_fields(("access", i, "readonly"), a.get("readonly"), "readonly", allow_system=False)
        rows = _compile(ctx, file, ("access", i, "rows"), a.get("rows"), checker)
        actions = ALL_ACTIONS if a.get("actions") == "all" else frozenset(a.get("actions") or ())
        access.append(AccessRule(frozenset(a.get("roles") or ()), actions, rows,
                                 frozenset(a.get("hidden") or ()), frozenset(a.get("readonly") or ())))
    default_columns = [n for n in fields if fields[n].stored and fields[n].type not in ("textarea", "rich_text", "json", "child_table", "signature")][:6]
    return FormDef(
        app=app, name=name, label=text(data.get("label") or name), title_field=title,
        fields=MappingProxyType(fields), indexes=tuple(indexes), validations=tuple(validations),
        layout=tuple(data.get("layout") or ()), list_columns=tuple(lst.get("columns") or default_columns),
        list_order=order, search=tuple(lst.get("search") or ([title] if title in fields else [])),
        duplicate_check=tuple(data.get("duplicate_check") or ()), access=tuple(access),
        child=bool(data.get("child")), file=file, spec=MappingProxyType(dict(data)))


register_step("forms", 10, compile_forms)
