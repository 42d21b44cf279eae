"""Identifiers people type: phone, email, url, id_card, vin, license_plate.

Each is normalised to one canonical spelling so ``unique``,
``duplicate_check`` and the blind index of personal data find the same
number however it was typed (``+86 138-0013-8000`` -> ``13800138000``,
``粤b·d12345`` -> ``粤BD12345``).  The Chinese rules live in
``forms.cn_validators``.
"""
from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa

from .. import cn_validators as cn
from .base import (ID_OPS, TEXT_OPS, FieldType, FieldValueError, check_lengths, check_text_value, fail, nfkc, register,
                   tz_of)

_REGION = re.compile(r"[A-Z]{2}")
_PHONE_FRAGMENT_JUNK = re.compile(r"[\s()（）]")
_TLD = re.compile(r"[a-z]{2,63}")
_PLAIN_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_WHITESPACE = re.compile(r"\s")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_BARE_HOST = re.compile(r"^[\w.-]+\.[a-zA-Z]{2,}([/:?#]|$)")
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")


def _wrap(exc: cn.CNValidationError) -> FieldValueError:
    return FieldValueError(exc.code, exc.message)


def _scalar_text(raw: Any, code: str, zh: str, en: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise fail(code, zh, en)
    if isinstance(raw, float):
        if not raw.is_integer():
            raise fail(code, zh, en)
        raw = int(raw)          # Excel stores 13800138000 as a float
    return str(raw)


class _Identity(FieldType):
    filter_ops = ID_OPS
    max_chars = 64

    def column_type(self, spec):
        return sa.String(self.max_chars)

    def from_db(self, value, spec):
        return None if value is None else str(value)

    def format(self, value, spec, lang="zh", tz=None):
        return "" if value is None else str(value)

    def filter_fragment(self, raw, spec):
        return nfkc(str(raw)).upper().replace(" ", "")


@register
class PhoneType(_Identity):
    """A phone number: CN mobile, landline with area code, 400/800/95xxx, or E.164.

    ``kinds: [mobile]`` restricts what is accepted (mobile, landline,
    service, international); ``region`` (default CN) is the country of
    numbers written without ``+``: other regions need the ``+`` form.
    """

    name = "phone"
    label = {"zh": "电话", "en": "Phone"}
    widget = "tel"
    max_chars = 32
    definition_keys = {
        "kinds": {"type": "array", "items": {"enum": list(cn.PHONE_KINDS)}, "minItems": 1, "uniqueItems": True},
        "region": {"type": "string", "pattern": "^[A-Z]{2}$"},
    }

    def check_definition(self, spec):
        problems = []
        for i, k in enumerate(spec.get("kinds") or []):
            if k not in cn.PHONE_KINDS:
                problems.append((("kinds", i), f"unknown phone kind '{k}'; use one of: {', '.join(cn.PHONE_KINDS)}"))
        r = spec.get("region")
        if r is not None and not _REGION.fullmatch(str(r)):
            problems.append((("region",), f"region '{r}' is not a 2-letter country code such as CN"))
        return problems

    def coerce(self, raw, spec):
        s = _scalar_text(raw, "invalid_phone", "电话号码应为文字，如 13800138000", "A phone number is text, e.g. 13800138000")
        try:
            value, _kind = cn.parse_phone(s, kinds=spec.get("kinds"), region=spec.get("region") or "CN")
        except cn.CNValidationError as exc:
            raise _wrap(exc) from None
        return value

    def compile_parser(self, spec):
        """Fast path: an 11-digit CN mobile number as text or a number (Excel), when mobiles are allowed."""
        if type(self).parse is not FieldType.parse or type(self).coerce is not PhoneType.coerce:
            return super().compile_parser(spec)
        try:
            allowed = tuple(spec.get("kinds") or cn.PHONE_KINDS)
            region = spec.get("region") or "CN"
            mobile_ok = "mobile" in allowed and (region or "CN").upper() == "CN"
        except Exception:  # noqa: BLE001 - a bad definition: parse reports it
            return super().compile_parser(spec)
        parse = self.parse
        if not mobile_ok:
            return lambda raw: parse(raw, spec)
        plain = _PLAIN_MOBILE.fullmatch

        def parser(raw):
            t = type(raw)
            if t is str:
                if plain(raw):
                    return raw
            elif t is int:
                if 13000000000 <= raw <= 19999999999:
                    s = str(raw)
                    if plain(s):
                        return s
            elif raw is None:
                return None
            return parse(raw, spec)

        return parser

    def value_schema(self, spec):
        return {"type": "string", "maxLength": 32, "examples": ["13800138000", "021-58880000", "+85291234567"]}

    def filter_fragment(self, raw, spec):
        return _PHONE_FRAGMENT_JUNK.sub("", nfkc(str(raw)))


_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


@functools.lru_cache(maxsize=4096)
def _domain_ok(domain: str) -> str | None:
    """-> the ASCII (punycode) domain, or None."""
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return None
    labels = ascii_domain.lower().split(".")
    if len(labels) < 2 or len(ascii_domain) > 253 or not all(_LABEL.fullmatch(lab) for lab in labels):
        return None
    tld = labels[-1]
    if not (_TLD.fullmatch(tld) or tld.startswith("xn--")):
        return None
    return ascii_domain


@register
class EmailType(_Identity):
    """An e-mail address, lower-cased (``Li.Lei@Example.COM`` -> ``li.lei@example.com``)."""

    name = "email"
    label = {"zh": "电子邮箱", "en": "Email"}
    widget = "email"
    max_chars = 254
    filter_ops = TEXT_OPS

    def coerce(self, raw, spec):
        if not isinstance(raw, str):
            raise fail("invalid_email", "邮箱应为文字，如 name@example.com", "An email address is text, e.g. name@example.com")
        s = nfkc(raw)
        if s.lower().startswith("mailto:"):
            s = s[7:]
        s = s.strip().strip("<>").lower()
        bad = fail("invalid_email", f"“{raw}”不是有效的邮箱地址，应如 name@example.com",
                   f"'{raw}' is not a valid email address; expected e.g. name@example.com")
        if s.count("@") != 1 or len(s) > 254:
            raise bad
        local, domain = s.split("@")
        if not local or len(local) > 64 or not _EMAIL_LOCAL.fullmatch(local) or not _domain_ok(domain):
            raise bad
        return check_text_value(s, {k: spec[k] for k in ("pattern", "pattern_message") if k in spec}, None)

    def compile_parser(self, spec):
        """Fast path: ASCII text that is a plain valid address (and matches ``pattern``)."""
        if type(self).parse is not FieldType.parse or type(self).coerce is not EmailType.coerce:
            return super().compile_parser(spec)
        try:
            pattern = spec.get("pattern")
            match = re.compile(str(pattern)).fullmatch if pattern else None
        except Exception:  # noqa: BLE001 - a bad definition: parse reports it
            return super().compile_parser(spec)
        parse, local_ok = self.parse, _EMAIL_LOCAL.fullmatch

        def parser(raw):
            if type(raw) is not str or not raw.isascii():
                return None if raw is None else parse(raw, spec)
            s = raw.strip()
            if s[:7].lower() == "mailto:" or s[:1] == "<" or s[-1:] == ">":
                return parse(raw, spec)
            s = s.lower()
            if s.count("@") != 1 or len(s) > 254:
                return None if not s else parse(raw, spec)
            local, domain = s.split("@")
            if not local or len(local) > 64 or not local_ok(local) or not _domain_ok(domain) \
                    or (match is not None and match(s) is None):
                return parse(raw, spec)         # raises the usual error
            return s

        return parser

    def value_schema(self, spec):
        return {"type": "string", "format": "email", "maxLength": 254}

    def filter_fragment(self, raw, spec):
        return nfkc(str(raw)).lower()


@register
class UrlType(_Identity):
    """A web address, ``http``/``https`` only; ``www.example.com`` gets ``https://``."""

    name = "url"
    label = {"zh": "网址", "en": "URL"}
    widget = "url"
    max_chars = 2048
    filter_ops = TEXT_OPS
    definition_keys = {"max_length": {"type": "integer", "minimum": 1}}

    def check_definition(self, spec):
        return check_lengths(spec, hard_max=2048)

    def coerce(self, raw, spec):
        if not isinstance(raw, str):
            raise fail("invalid_url", "网址应为文字，如 https://example.com", "A URL is text, e.g. https://example.com")
        s = raw.strip()
        bad = fail("invalid_url", f"“{raw}”不是有效网址，应以 http:// 或 https:// 开头，如 https://example.com",
                   f"'{raw}' is not a valid web address; it should start with http:// or https://, e.g. https://example.com")
        if _WHITESPACE.search(s) or len(s) > 2048:
            raise bad
        if not _SCHEME.match(s) and _BARE_HOST.match(s):
            s = "https://" + s
        try:
            parts = urlsplit(s)
            port = parts.port
        except ValueError:
            raise bad from None
        if parts.scheme.lower() not in ("http", "https"):
            raise fail("invalid_url", "只支持 http:// 或 https:// 开头的网址", "Only http:// and https:// addresses are allowed")
        host = parts.hostname or ""
        if parts.username or parts.password:
            raise fail("invalid_url", "网址中不能包含用户名或密码", "A URL must not contain a user name or password")
        is_ip = _IPV4.fullmatch(host) or ":" in host
        if not host or (not is_ip and host != "localhost" and not _domain_ok(host)):
            raise bad
        netloc = host + (f":{port}" if port else "")
        if ":" in host:
            netloc = f"[{host}]" + (f":{port}" if port else "")
        value = urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, parts.fragment))
        return check_text_value(value, spec, 2048)

    def value_schema(self, spec):
        return {"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2048}

    def filter_fragment(self, raw, spec):
        return str(raw).strip()


@register
class IdCardType(_Identity):
    """A PRC resident ID number (18 characters, checked); ``allow_legacy: true``
    also accepts 15-digit numbers and stores them upgraded to 18."""

    name = "id_card"
    label = {"zh": "身份证号", "en": "ID card number"}
    widget = "idcard"
    max_chars = 18
    filter_ops = ("eq", "ne", "in", "startswith", "empty")
    definition_keys = {"allow_legacy": {"type": "boolean"}}

    def coerce(self, raw, spec):
        s = _scalar_text(raw, "invalid_id_card", "身份证号应为文字（18位）", "An ID number is text (18 characters)")
        import datetime as dt
        today = dt.datetime.now(tz_of(spec)).date()
        try:
            return cn.validate_id_card(s, today=today, allow_legacy=bool(spec.get("allow_legacy"))).number
        except cn.CNValidationError as exc:
            raise _wrap(exc) from None

    def value_schema(self, spec):
        return {"type": "string", "pattern": r"^\d{17}[\dX]$"}


@register
class VinType(_Identity):
    """A 17-character VIN with its check digit; ``check_digit: false`` for
    vehicles whose VIN has no check digit (e.g. some European imports)."""

    name = "vin"
    label = {"zh": "车架号（VIN）", "en": "VIN"}
    widget = "vin"
    max_chars = 17
    definition_keys = {"check_digit": {"type": "boolean"}}

    def coerce(self, raw, spec):
        s = _scalar_text(raw, "invalid_vin", "车架号应为17位字母数字", "A VIN is 17 letters and digits")
        try:
            return cn.validate_vin(s, check_digit=spec.get("check_digit", True) is not False)
        except cn.CNValidationError as exc:
            raise _wrap(exc) from None

    def value_schema(self, spec):
        return {"type": "string", "pattern": "^[A-HJ-NPR-Z0-9]{17}$"}


@register
class LicensePlateType(_Identity):
    """A mainland licence plate, stored without separators (``粤BD12345``),
    shown with the dot (``粤B·D12345``)."""

    name = "license_plate"
    label = {"zh": "车牌号", "en": "Licence plate"}
    widget = "plate"
    max_chars = 16

    def coerce(self, raw, spec):
        s = _scalar_text(raw, "invalid_plate", "车牌号应为文字，如 沪A12345", "A plate is text, e.g. 沪A12345")
        try:
            return cn.validate_license_plate(s)[0]
        except cn.CNValidationError as exc:
            raise _wrap(exc) from None

    def value_schema(self, spec):
        return {"type": "string", "maxLength": 16, "examples": ["沪A12345", "粤BD12345"]}

    def format(self, value, spec, lang="zh", tz=None):
        return "" if value is None else cn.format_plate(value)

    def filter_fragment(self, raw, spec):
        return cn.normalize_plate(str(raw))
