"""From package sources to one frozen, validated ``AppDef``.

Definition vs instance: a package is parsed and checked once, here, into
immutable definition objects that every engine shares; runtime objects
(records, flow instances, timers) only point at them.

Each engine contributes a *compile step* (``register_step``) that reads its
own files, reports problems with positions through the ``CompileContext`` and
stores its compiled result in ``ctx.out[<section>]``.  The engine core never
imports the engines: the top layer (``ui``) imports them, which registers
their steps.  Steps run in ``order`` (app 0, forms 10, flows 20, rules 30,
reports 40) so later steps can check references into earlier ones.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .package import SourcePackage
from .problems import DefinitionError, Problem, Problems, one_of, suggest
from .schema_check import schema_problems
from .yamlpos import LoadedYaml, YamlSyntaxError, load_yaml

Text = Mapping[str, str]  # {'zh': ..., 'en': ...}


def text(value: Any) -> dict:
    """Normalise a label/message (string or {zh, en}) to {'zh', 'en'}."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"zh": value, "en": value}
    zh, en = value.get("zh"), value.get("en")
    return {"zh": zh or en or "", "en": en or zh or ""}


@dataclass
class SourceFile:
    """One parsed YAML file: plain data plus positions."""

    path: str
    loaded: LoadedYaml

    @property
    def data(self) -> Any:
        return self.loaded.data


@dataclass(frozen=True)
class RoleDef:
    name: str
    label: Text
    permissions: frozenset[str]


_NO_FORMS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class AppDef:
    """The compiled app: frozen, shared by every engine and request."""

    name: str
    version: str
    title: Text
    timezone: str
    default_language: str
    roles: Mapping[str, RoleDef]
    user_attributes: Mapping[str, Any]
    menus: tuple
    home: Mapping[str, Any]
    calendars: Mapping[str, Any]
    quiet_hours: Mapping[str, str] | None
    frequency_cap: Mapping[str, Any] | None
    settings: Mapping[str, Any]
    sections: Mapping[str, Any]     # 'forms' -> {name: FormDef}, 'flows', 'rules', 'reports', 'templates', ...
    package: SourcePackage          # the sources, for export and the studio
    digest: str                     # content hash: re-importing identical sources is a no-op

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def forms(self) -> Mapping[str, Any]:
        return self.sections.get("forms", _NO_FORMS)

    def section(self, name: str, default: Any = None) -> Any:
        return self.sections.get(name, default)


class CompileContext:
    """What a compile step sees: the files, a problem collector, results so far."""

    def __init__(self, package: SourcePackage):
        self.package = package
        self.problems = Problems()
        self.files: dict[str, SourceFile] = {}
        self.out: dict[str, Any] = {}
        self.app_data: dict = {}

    # -- problems -------------------------------------------------------
    def error(self, file: str, path: tuple, message: str, at_key: bool = False) -> None:
        src = self.files.get(file)
        line, col = src.loaded.position(path, prefer_key=at_key) if src else (1, 1)
        self.problems.add(file, line, col, message)

    def error_in_expression(self, file: str, path: tuple, exc: Exception) -> None:
        """Report an ExpressionError at the column inside the YAML value."""
        src = self.files.get(file)
        line, col = src.loaded.position(path) if src else (1, 1)
        inner = getattr(exc, "col", None)
        value = _at(src.data, path) if src else None
        if inner and isinstance(value, str) and src is not None:
            # Plain and quoted scalars on one line: the value starts at col (after a quote if quoted).
            raw_line = src_line(self.package, file, line)
            offset = 1 if raw_line[col - 1:col] in ("'", '"') else 0
            col = col + offset + inner - 1
        self.problems.add(file, line, col, f"{getattr(exc, 'message', str(exc))} (in expression '{_short(value)}')")

    # -- files ----------------------------------------------------------
    def yaml_files(self, folder: str) -> list[SourceFile]:
        return [self.files[p] for p in self.package.yaml_files(folder) if p in self.files]

    def has_template(self, name: str) -> bool:
        return any(p.startswith(f"templates/{name}.") for p in self.package.files)


def src_line(package: SourcePackage, file: str, line: int) -> str:
    try:
        return package.text(file).splitlines()[line - 1]
    except (IndexError, KeyError, UnicodeDecodeError):
        return ""


def _short(value: Any, limit: int = 60) -> str:
    s = str(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _at(root: Any, path: tuple) -> Any:
    for part in path:
        try:
            root = root[part]
        except (KeyError, IndexError, TypeError):
            return None
    return root


# ---------------------------------------------------------------------------
# compile steps registry

@dataclass(frozen=True)
class CompileStep:
    name: str
    order: int
    run: Callable[[CompileContext], None]


_STEPS: dict[str, CompileStep] = {}


def register_step(name: str, order: int, run: Callable[[CompileContext], None]) -> None:
    _STEPS[name] = CompileStep(name, order, run)


def registered_steps() -> list[CompileStep]:
    return sorted(_STEPS.values(), key=lambda s: s.order)


# ---------------------------------------------------------------------------
# parsing and schema checks (generic for every definition file)

FOLDER_KINDS = {"forms": "form", "flows": "flow", "rules": "rules", "reports": "reports"}


def _parse_all(ctx: CompileContext) -> None:
    pkg = ctx.package
    targets = [("app.yaml", "app")] + [
        (p, kind) for folder, kind in FOLDER_KINDS.items() for p in pkg.yaml_files(folder)]
    for path, kind in targets:
        if path not in pkg.files:
            continue   # no app.yaml: compile_package reports it
        try:
            text_ = pkg.text(path)
        except UnicodeDecodeError:
            ctx.problems.add(path, 1, 1, "file is not UTF-8 text; save it as UTF-8")
            continue
        try:
            loaded = load_yaml(text_)
        except YamlSyntaxError as exc:
            ctx.problems.add(path, exc.line, exc.col, exc.message)
            continue
        src = SourceFile(path, loaded)
        if loaded.data is None:
            ctx.problems.add(path, 1, 1, "file is empty; expected a mapping of definitions")
            continue
        ctx.files[path] = src
        for err_path, at_key, message in schema_problems(kind, loaded.data):
            ctx.error(path, err_path, message, at_key=at_key)


def _compile_app_header(ctx: CompileContext) -> None:
    src = ctx.files.get("app.yaml")
    if src is None or not isinstance(src.data, dict):
        return
    data = src.data
    ctx.app_data = data
    tz = data.get("timezone", "UTC")
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError, OSError):
        ctx.error("app.yaml", ("timezone",), f"unknown timezone '{tz}'; use an IANA name such as 'Asia/Shanghai' or 'UTC'")
    # Wrong shapes were reported by the schema check; look only at the right ones.
    roles = _dict(data.get("roles"))
    for i, menu in enumerate(_list(data.get("menus"))):
        if isinstance(menu, dict):
            for j, role in enumerate(_list(menu.get("roles"))):
                if isinstance(role, str) and role not in roles:
                    ctx.error("app.yaml", ("menus", i, "roles", j), f"unknown role '{role}'{suggest(role, roles) or '; ' + one_of(roles)}")
    for role in _dict(data.get("home")):
        if role not in roles:
            ctx.error("app.yaml", ("home", role), f"unknown role '{role}'{suggest(role, roles)}", at_key=True)


def compile_package(package: SourcePackage) -> AppDef:
    """Parse, check and compile; raise :class:`DefinitionError` with every problem."""
    ctx = CompileContext(package)
    _parse_all(ctx)
    _compile_app_header(ctx)
    if "app.yaml" not in ctx.files:
        ctx.problems.raise_if_any()
        raise DefinitionError([Problem("app.yaml", 1, 1, "app.yaml is missing")])
    for step in registered_steps():
        try:
            step.run(ctx)
        except DefinitionError as exc:
            ctx.problems.items.extend(exc.problems)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError):
            # Steps read data the schema check has already seen; when it (or an
            # earlier step) reported a problem, a wrongly-shaped value may trip
            # a step.  Those problems explain it: report them and stop, rather
            # than pile guesses on a half-compiled app.  With no problem
            # reported, the crash is an engine bug and must surface.
            if not ctx.problems:
                raise
            break
    _check_cross_app_references(ctx)
    _one_problem_per_position(ctx)
    ctx.problems.raise_if_any()
    return build_appdef(ctx)


def _one_problem_per_position(ctx: CompileContext) -> None:
    """The schema check and a compile step may both object to one value;
    the first (schema) message is kept so each position is reported once."""
    seen: set = set()
    kept = []
    for p in ctx.problems.items:
        if (p.file, p.line, p.col) not in seen:
            seen.add((p.file, p.line, p.col))
            kept.append(p)
    ctx.problems.items = kept


def _check_cross_app_references(ctx: CompileContext) -> None:
    """Menus and home widgets reference forms, reports and dashboards."""
    data = ctx.app_data
    forms = ctx.out.get("forms", {})
    reports = ctx.out.get("reports", {})
    dashboards = ctx.out.get("dashboards", {})
    kinds = {"form": forms, "report": reports, "dashboard": dashboards}
    for i, menu in enumerate(_list(data.get("menus"))):
        if not isinstance(menu, dict):
            continue
        for key, known in kinds.items():
            if isinstance(menu.get(key), str) and "forms" in ctx.out and (key == "form" or "reports" in ctx.out) and menu[key] not in known:
                ctx.error("app.yaml", ("menus", i, key), f"unknown {key} '{menu[key]}'{_choices(menu[key], known, key)}")
    for role, items in _dict(data.get("home")).items():
        for j, item in enumerate(_list(items)):
            if isinstance(item, dict):
                for key, known in kinds.items():
                    if isinstance(item.get(key), str) and "forms" in ctx.out and (key == "form" or "reports" in ctx.out) and item[key] not in known:
                        ctx.error("app.yaml", ("home", role, j, key), f"unknown {key} '{item[key]}'{_choices(item[key], known, key)}")


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _choices(name: str, known, kind: str) -> str:
    if not known:
        folder = "forms/" if kind == "form" else "reports/"
        return f"; no {kind}s are defined yet (add one in {folder})"
    return suggest(name, known) or "; " + one_of(known)


def build_appdef(ctx: CompileContext) -> AppDef:
    d = ctx.app_data
    roles = {name: RoleDef(name, text(r.get("label") or name), frozenset(r.get("permissions") or []))
             for name, r in (d.get("roles") or {}).items()}
    digest = hashlib.sha256()
    for path in sorted(ctx.package.files):
        digest.update(path.encode() + b"\0" + ctx.package.files[path] + b"\0")
    return AppDef(
        name=d["name"], version=str(d["version"]), title=text(d.get("title")),
        timezone=d.get("timezone", "UTC"), default_language=d.get("default_language", "zh"),
        roles=MappingProxyType(roles), user_attributes=MappingProxyType(d.get("user_attributes") or {}),
        menus=tuple(d.get("menus") or ()), home=MappingProxyType(d.get("home") or {}),
        calendars=MappingProxyType(d.get("calendars") or {}), quiet_hours=d.get("quiet_hours"),
        frequency_cap=d.get("frequency_cap"), settings=MappingProxyType(d.get("settings") or {}),
        sections=MappingProxyType({k: (MappingProxyType(v) if isinstance(v, dict) else v) for k, v in ctx.out.items()}),
        package=ctx.package, digest=digest.hexdigest(),
    )


def validate_package(package: SourcePackage) -> list[Problem]:
    """All problems, or [] -- never raises for a bad definition."""
    try:
        compile_package(package)
    except DefinitionError as exc:
        return exc.problems
    return []
