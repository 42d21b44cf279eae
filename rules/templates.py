"""Message templates: jinja2 in a sandbox, compiled once per app version.

Files: ``templates/<name>.<lang>.j2`` and channel variants
``templates/<name>.<channel>.<lang>.j2`` (``lead_assigned.sms.zh.j2``); a file
ending ``.html.j2`` is HTML and autoescaped, everything else is plain text
(an SMS must not turn ``&`` into ``&amp;``).

A template may declare, at top level, ``{% set kind = 'marketing' %}``
(marketing messages need the customer's consent) and ``{% set subject = ... %}``
(e-mail subject).

Security: templates are written by analysts and travel in uploaded packages,
so they run in jinja2's ``ImmutableSandboxedEnvironment`` -- no ``__class__``/``_private``
attribute access, no calling unsafe methods, no changing the data they are given
(``record.update(...)``, ``list.append``: the record the rule's next actions see is
not theirs to change), ranges capped -- with a loader
that only sees the package's ``templates/`` folder (``{% include %}`` of a
partial works; any other path is not found).  The context holds plain data
only: no functions that touch files, the environment or the database.
Attribute names starting with ``_`` are also refused when the package is
validated, so most attempts are caught before install.
"""
from __future__ import annotations

import datetime as dt
import re
import threading
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from jinja2 import BaseLoader, TemplateNotFound, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

from engine.checkcache import checks, fingerprint, source_fingerprint

CHANNELS = ("sms", "app", "wechat", "email", "inapp")
LANGS = ("zh", "en")
_NAME = re.compile(r"^templates/([a-z][a-z0-9_]{0,62})(?:\.(sms|app|wechat|email|inapp))?\.(zh|en)(\.html)?\.j2$")
MAX_OUTPUT = 20_000


class TemplateProblem(Exception):
    """A template cannot be rendered; the message says which and why."""


@dataclass(frozen=True)
class Rendered:
    text: str
    subject: str | None
    kind: str            # service | marketing
    path: str


class _PackageLoader(BaseLoader):
    def __init__(self, files: Mapping[str, bytes]):
        self.files = files

    def get_source(self, environment, template):
        path = template if template.startswith("templates/") else f"templates/{template}"
        if ".." in path.split("/") or path not in self.files:
            raise TemplateNotFound(template)
        return self.files[path].decode("utf-8"), path, lambda: True


def _fmt_datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M", tz: Any = None) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(tz).strftime(fmt) if tz else value.strftime(fmt)
    if isinstance(value, dt.date):
        return value.strftime(fmt if "%H" not in fmt else "%Y-%m-%d")
    return str(value)


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(ImmutableSandboxedEnvironment):
    """Missing values render empty (StrictUndefined off), but unsafe access fails loudly, not silently."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        # ``record.name`` on a plain dict: jinja's own order is getattr() first -- an AttributeError
        # raised and caught for every field read, most of a message's render -- then obj[name].  A
        # plain dict has no attributes besides dict's own, so for any other name (and not a '_' one)
        # that getattr() can only fail: go straight to the item, with the same result.
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES and attribute[:1] != "_":
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")


def make_environment(files: Mapping[str, bytes], tz: Any = None) -> SandboxedEnvironment:
    env = _Sandbox(
        loader=_PackageLoader(files),
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        finalize=lambda v: "" if v is None else v,
        keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True, auto_reload=False, cache_size=-1)
    env.filters["datetime"] = lambda v, fmt="%Y-%m-%d %H:%M": _fmt_datetime(v, fmt, tz)
    env.filters["date"] = lambda v, fmt="%Y-%m-%d": _fmt_datetime(v, fmt, tz)
    env.filters["money"] = lambda v: "" if v is None else f"{float(v):,.2f}"
    env.globals.pop("lipsum", None)
    return env


# ---------------------------------------------------------------------------
# validation (compile step)

def template_files(files: Mapping[str, bytes]) -> list[str]:
    return sorted(p for p in files if p.startswith("templates/") and p.endswith(".j2"))


_CHECKER = None


def _checker_fingerprint() -> str:
    global _CHECKER
    if _CHECKER is None:
        import jinja2
        _CHECKER = source_fingerprint(__file__, jinja2.__version__)
    return _CHECKER


def check_templates(ctx: Any) -> dict[str, dict]:
    """Report problems in ``templates/*.j2``; return name -> {'kind', 'variants'} for the app definition.

    Parsing the templates is most of a package's validation time, and each
    result depends only on the file, so results are kept in
    :mod:`engine.checkcache` under the file's content.
    """
    env = None
    out: dict[str, dict] = {}
    for path in template_files(ctx.package.files):
        m = _NAME.match(path)
        if not m:
            if path.count("/") == 1 and not path.split("/", 1)[1].startswith("_"):
                ctx.problems.add(path, 1, 1, "template file names are <name>.<lang>.j2 or <name>.<channel>.<lang>.j2 "
                                             f"(lang: {', '.join(LANGS)}; channel: {', '.join(CHANNELS)}), "
                                             "e.g. lead_assigned.zh.j2; partials for {% include %} start with '_'")
            continue
        key = fingerprint(_checker_fingerprint(), path, ctx.package.files[path])
        result = checks.get("templates", key)
        if result is None:
            if env is None:
                env = make_environment(ctx.package.files)
            result = _check_one(env, path, ctx.package.files[path])
            checks.put("templates", key, result)
        for line, col, message in result["problems"]:
            ctx.problems.add(path, line, col, message)
        if not result["parsed"]:
            continue
        name, channel, lang = m.group(1), m.group(2), m.group(3)
        info = out.setdefault(name, {"kind": "service", "variants": []})
        info["variants"].append((channel, lang, path))
        if result["kind"] == "marketing":
            info["kind"] = "marketing"
    return out


_MAYBE_PRIVATE = re.compile(r"\.\s*_|\[\s*['\"]_")


def _check_one(env: SandboxedEnvironment, path: str, blob: bytes) -> dict:
    """Problems and declared kind of one template, as plain JSON data."""
    try:
        source = blob.decode("utf-8")
    except UnicodeDecodeError:
        return {"parsed": False, "kind": None, "problems": [(1, 1, "template is not UTF-8 text; save it as UTF-8")]}
    try:
        tree = env.parse(source, name=path, filename=path)
    except TemplateSyntaxError as exc:
        return {"parsed": False, "kind": None, "problems": [(exc.lineno or 1, 1, f"template syntax error: {exc.message}")]}
    unsafe: dict[int, list[str]] = {}
    # x._y / x['_y'] need these characters in the source: most templates skip the tree walk
    nodes_to_check = tree.find_all((nodes.Getattr, nodes.Getitem)) if _MAYBE_PRIVATE.search(source) else ()
    for node in reversed(list(nodes_to_check)):
        attr = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
        if attr and attr.startswith("_") and attr not in unsafe.setdefault(node.lineno, []):
            unsafe[node.lineno].append(attr)
    problems = [(lineno, 1, f"templates may not use {', '.join(repr(a) for a in attrs)}: names "
                            "starting with '_' are refused by the template sandbox")
                for lineno, attrs in sorted(unsafe.items()) if attrs]
    return {"parsed": True, "kind": static_kind(tree), "problems": problems}


def static_kind(tree: nodes.Template) -> str:
    for node in tree.body:
        if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name) and node.target.name == "kind":
            if isinstance(node.node, nodes.Const) and node.node.value == "marketing":
                return "marketing"
    return "service"


# ---------------------------------------------------------------------------
# rendering

_UNSEEN = object()


class Templates:
    """Per app digest: one sandboxed environment, its compiled templates (by path) and which file
    serves a (name, channel, language)."""

    def __init__(self) -> None:
        self._by_digest: dict[str, tuple[SandboxedEnvironment, dict]] = {}
        self._lock = threading.Lock()

    def _env(self, app: Any) -> tuple[SandboxedEnvironment, dict]:
        found = self._by_digest.get(app.digest)
        if found is None:
            with self._lock:
                found = self._by_digest.get(app.digest)
                if found is None:
                    env = make_environment(app.package.files, app.tz)
                    found = (env, {})
                    if len(self._by_digest) > 20:
                        self._by_digest.clear()
                    self._by_digest[app.digest] = found
        return found

    def find(self, app: Any, name: str, channel: str | None, lang: str | None) -> str | None:
        files = app.package.files
        langs = [lang] if lang else []
        langs += [app.default_language] + [x for x in LANGS if x not in (lang, app.default_language)]
        for lg in langs:
            for cand in ((f"templates/{name}.{channel}.{lg}.j2", f"templates/{name}.{channel}.{lg}.html.j2") if channel else ()) + (
                    f"templates/{name}.{lg}.j2", f"templates/{name}.{lg}.html.j2"):
                if cand in files:
                    return cand
        return None

    def kind(self, app: Any, name: str) -> str:
        info = (app.section("templates") or {}).get(name)
        return info.get("kind", "service") if isinstance(info, Mapping) else "service"

    def render(self, app: Any, name: str, channel: str | None, lang: str | None, context: Mapping[str, Any]) -> Rendered:
        env, compiled = self._env(app)
        # the file for (name, channel, lang) depends only on the app version: looked up once
        path = compiled.get((name, channel, lang), _UNSEEN)
        if path is _UNSEEN:
            path = compiled[(name, channel, lang)] = self.find(app, name, channel, lang)
        if path is None:
            raise TemplateProblem(f"template '{name}' has no file templates/{name}.<lang>.j2")
        got = compiled.get(path)
        if got is None:
            try:
                tmpl = env.get_template(path)
            except TemplateError as exc:
                raise TemplateProblem(f"template {path}: {exc}") from None
            # the template's globals (range, dict, namespace...) as a plain dict: jinja would merge
            # its ChainMap of them into a copy of the variables on every render (a third of a
            # short message's render)
            got = compiled[path] = (tmpl, dict(tmpl.globals))
        tmpl, template_globals = got
        try:
            # the variables over the globals, as jinja orders them; one new dict, never the caller's
            module = tmpl.make_module({**template_globals, **context}, shared=True)
            text = str(module)
        except SecurityError as exc:
            raise TemplateProblem(f"template {path} was refused by the sandbox: {exc} -- templates may only "
                                  f"read the message's data (record, recipient, app, now)") from None
        except TemplateNotFound as exc:
            raise TemplateProblem(f"template {path}: includes '{exc.name}', which is not a file in templates/") from None
        except TemplateError as exc:
            raise TemplateProblem(f"template {path}: {exc}") from None
        except (TypeError, ValueError, ArithmeticError, AttributeError, KeyError, IndexError, OverflowError) as exc:
            raise TemplateProblem(f"template {path} failed: {type(exc).__name__}: {exc}") from None
        if len(text) > MAX_OUTPUT:
            raise TemplateProblem(f"template {path} produced {len(text)} characters; the limit is {MAX_OUTPUT}")
        subject = getattr(module, "subject", None)
        kind = getattr(module, "kind", None) or "service"
        return Rendered(text.strip(), str(subject) if subject else None, "marketing" if kind == "marketing" else "service", path)


TEMPLATES = Templates()
