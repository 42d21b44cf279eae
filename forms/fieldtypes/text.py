"""Text-like types: text, textarea, rich_text (sanitised HTML)."""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any, Mapping
from urllib.parse import urlsplit

import sqlalchemy as sa

from .base import (TEXT_OPS, FieldType, check_lengths, check_text_value, clean_text, fail, register)

_URL_JUNK = re.compile(r"[\x00-\x20]")
_SPACES = re.compile(r"\s+")

TEXT_DEFAULT_MAX = 255          # VARCHAR(255) unless max_length says otherwise
TEXT_VARCHAR_LIMIT = 4000       # above this max_length a text field is stored as TEXT
TEXTAREA_DEFAULT_MAX = 20000
RICH_TEXT_DEFAULT_MAX = 100000  # characters of visible text
RICH_TEXT_HTML_LIMIT = 512 * 1024

_LENGTH_KEYS = {
    "min_length": {"type": "integer", "minimum": 0},
    "max_length": {"type": "integer", "minimum": 1},
    "pattern": {"type": "string"},
    "pattern_message": {"$ref": "#/$defs/text"},
}


class _TextBase(FieldType):
    multiline = False
    default_max: int | None = TEXT_DEFAULT_MAX
    definition_keys = _LENGTH_KEYS

    def check_definition(self, spec: Mapping) -> list[tuple[tuple, str]]:
        return check_lengths(spec)

    def coerce(self, raw: Any, spec: Mapping) -> str | None:
        s = clean_text(raw, multiline=self.multiline)
        if s == "":
            return None
        return check_text_value(s, spec, self.default_max)

    def compile_parser(self, spec: Mapping):
        """Fast path: printable ``str`` (and, multi-line, with newlines) and ``int``;
        anything else, or any value that fails a check, goes through ``parse``."""
        if type(self).coerce is not _TextBase.coerce or type(self).parse is not FieldType.parse:
            return super().compile_parser(spec)
        try:
            hi = spec.get("max_length") or self.default_max
            hi = None if hi is None else int(hi)
            lo = spec.get("min_length")
            lo = int(lo) if lo else 0
            pattern = spec.get("pattern")
            match = re.compile(str(pattern)).fullmatch if pattern else None
        except Exception:  # noqa: BLE001 - a bad definition: let parse report it as it always has
            return super().compile_parser(spec)
        parse, multiline = self.parse, self.multiline

        def parser(raw):
            t = type(raw)
            if t is str:
                if raw.isprintable():           # no controls, zero-width chars, newlines; ' ' the only blank
                    s = raw.strip()
                elif multiline:
                    s = raw.replace("\r\n", "\n").replace("\r", "\n")
                    if not s.replace("\n", "").isprintable():
                        return parse(raw, spec)
                    s = s.strip()
                else:
                    return parse(raw, spec)
                if not s:
                    return None
            elif t is int:
                s = str(raw)
            elif raw is None:
                return None
            else:
                return parse(raw, spec)
            n = len(s)
            if (hi is not None and n > hi) or n < lo or (match is not None and match(s) is None):
                return parse(raw, spec)         # raises the usual error
            return s

        return parser

    def value_schema(self, spec: Mapping) -> dict:
        schema: dict = {"type": "string"}
        hi = spec.get("max_length") or self.default_max
        if hi:
            schema["maxLength"] = int(hi)
        if spec.get("min_length"):
            schema["minLength"] = int(spec["min_length"])
        if spec.get("pattern"):
            p = str(spec["pattern"])
            schema["pattern"] = p if p.startswith("^") else f"^(?:{p})$"
        return schema

    def from_db(self, value: Any, spec: Mapping) -> Any:
        return None if value is None else str(value)

    def format(self, value: Any, spec: Mapping, lang: str = "zh", tz: Any = None) -> str:
        return "" if value is None else str(value)


@register
class TextType(_TextBase):
    """One line of text; newlines typed or pasted become spaces."""

    name = "text"
    label = {"zh": "单行文本", "en": "Text"}
    widget = "text"
    filter_ops = TEXT_OPS

    def check_definition(self, spec):
        return check_lengths(spec)

    def column_type(self, spec: Mapping) -> sa.types.TypeEngine:
        n = int(spec.get("max_length") or TEXT_DEFAULT_MAX)
        return sa.Text() if n > TEXT_VARCHAR_LIMIT else sa.String(n)


@register
class TextareaType(_TextBase):
    """Several lines of plain text (``\\r\\n`` normalised to ``\\n``)."""

    name = "textarea"
    label = {"zh": "多行文本", "en": "Long text"}
    widget = "textarea"
    filter_ops = ("contains", "empty")
    multiline = True
    default_max = TEXTAREA_DEFAULT_MAX
    sortable = False

    def column_type(self, spec: Mapping) -> sa.types.TypeEngine:
        return sa.Text()


# -- rich text --------------------------------------------------------------------------------

ALLOWED_TAGS = frozenset({
    "p", "br", "hr", "div", "span", "b", "strong", "i", "em", "u", "s", "del", "ins", "mark", "sub", "sup", "small",
    "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code",
    "a", "img", "table", "caption", "thead", "tbody", "tfoot", "tr", "th", "td",
})
ALLOWED_ATTRIBUTES = {
    "a": frozenset({"href", "title"}),
    "img": frozenset({"src", "alt", "title", "width", "height"}),
    "td": frozenset({"colspan", "rowspan"}),
    "th": frozenset({"colspan", "rowspan"}),
    "ol": frozenset({"start"}),
}
URL_ATTRIBUTES = frozenset({"href", "src"})
URL_SCHEMES = frozenset({"http", "https", "mailto", "tel"})
DROP_WITH_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "template", "noscript",
                               "textarea", "select", "svg", "math", "title", "head"})
VOID_TAGS = frozenset({"br", "hr", "img"})


def _url_ok(value: str) -> bool:
    v = _URL_JUNK.sub("", html.unescape(value)).lower()
    scheme = urlsplit(v).scheme
    return scheme == "" and not v.startswith("//") or scheme in URL_SCHEMES


class _Sanitiser(HTMLParser):
    """A whitelist sanitiser on the standard library, used when ``nh3`` is absent.

    The output is rebuilt from parsed tokens: text is escaped, only allowed
    tags/attributes are written, URLs must be relative or http(s)/mailto/tel,
    comments and processing instructions are dropped, ``<script>`` and
    friends are dropped with their content, open tags are closed.
    """

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[str] = []
        self.skip_depth = 0
        self.skip_tag: str | None = None

    def handle_starttag(self, tag, attrs):
        tag = tag.lower()
        if self.skip_depth:
            if tag == self.skip_tag:
                self.skip_depth += 1
            return
        if tag in DROP_WITH_CONTENT:
            self.skip_tag, self.skip_depth = tag, 1
            return
        if tag not in ALLOWED_TAGS:
            return
        allowed = ALLOWED_ATTRIBUTES.get(tag, frozenset())
        parts = [tag]
        for name, value in attrs:
            name = name.lower()
            if name not in allowed or value is None:
                continue
            if name in URL_ATTRIBUTES and not _url_ok(value):
                continue
            parts.append(f'{name}="{html.escape(value, quote=True)}"')
        if tag == "a":
            parts.append('rel="noopener noreferrer"')
        self.out.append("<" + " ".join(parts) + ">")
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        tag = tag.lower()
        if tag not in VOID_TAGS and self.stack and self.stack[-1] == tag and not self.skip_depth:
            self.stack.pop()
            self.out.append(f"</{tag}>")

    def handle_endtag(self, tag):
        tag = tag.lower()
        if self.skip_depth:
            if tag == self.skip_tag:
                self.skip_depth -= 1
            return
        if tag not in self.stack:
            return
        while self.stack:
            top = self.stack.pop()
            self.out.append(f"</{top}>")
            if top == tag:
                break

    def handle_data(self, data):
        if not self.skip_depth:
            self.out.append(html.escape(data, quote=False))

    def result(self) -> str:
        self.close()
        return "".join(self.out) + "".join(f"</{t}>" for t in reversed(self.stack))


def sanitize_html(value: str) -> str:
    """Keep a safe subset of HTML (see ``ALLOWED_TAGS``); ``nh3`` (ammonia) when installed."""
    try:
        import nh3
    except ImportError:
        p = _Sanitiser()
        p.feed(value)
        return p.result()
    return nh3.clean(value, tags=set(ALLOWED_TAGS), clean_content_tags=set(DROP_WITH_CONTENT - {"title", "head"}) | {"script", "style"},
                     attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()}, url_schemes=set(URL_SCHEMES),
                     strip_comments=True, link_rel="noopener noreferrer")


class _TextOnly(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"):
            self.parts.append(" ")


def html_to_text(value: str) -> str:
    """Visible text of (sanitised) HTML, whitespace collapsed."""
    p = _TextOnly()
    p.feed(value)
    p.close()
    return _SPACES.sub(" ", "".join(p.parts)).strip()


@register
class RichTextType(_TextBase):
    """HTML from the rich-text editor, sanitised on the way in.

    ``min_length``/``max_length`` count visible characters; ``pattern`` is
    not applied (it would see markup).
    """

    name = "rich_text"
    label = {"zh": "富文本", "en": "Rich text"}
    widget = "richtext"
    filter_ops = ("contains", "empty")
    multiline = True
    default_max = RICH_TEXT_DEFAULT_MAX
    sortable = False
    definition_keys = {k: v for k, v in _LENGTH_KEYS.items() if k in ("min_length", "max_length")}

    def column_type(self, spec: Mapping) -> sa.types.TypeEngine:
        return sa.Text()

    compile_parser = FieldType.compile_parser

    def coerce(self, raw: Any, spec: Mapping) -> str | None:
        if not isinstance(raw, str):
            raise fail("invalid_text", "应为文字或 HTML", "Expected text or HTML")
        if len(raw) > RICH_TEXT_HTML_LIMIT:
            raise fail("too_large", f"内容过大（超过 {RICH_TEXT_HTML_LIMIT // 1024} KB），请删减或改为附件",
                       f"Too large (over {RICH_TEXT_HTML_LIMIT // 1024} KB); shorten it or attach a file")
        clean = sanitize_html(raw).strip()
        visible = html_to_text(clean)
        if not visible and "<img" not in clean:
            return None
        spec = {k: v for k, v in spec.items() if k not in ("pattern",)}
        check_text_value(clean, spec, self.default_max, measure=visible)
        return clean

    def value_schema(self, spec: Mapping) -> dict:
        return {"type": "string", "contentMediaType": "text/html"}

    def format(self, value: Any, spec: Mapping, lang: str = "zh", tz: Any = None) -> str:
        return "" if value is None else html_to_text(value)
