"""Validators for Chinese (and international) identifiers; pure functions, no I/O.

* PRC resident ID numbers (GB 11643-1999): 18 characters, ISO 7064 MOD 11-2
  check character (``0-9`` or ``X``), a real birth date not in the future;
  15-digit numbers from before 1999 can be upgraded to 18.
* VINs (ISO 3779; check digit per the North-American rule, which GB 16735
  also prescribes for Chinese VINs such as ``LSV…``, ``LFV…``, ``LRW…``):
  17 characters without I, O, Q; position 9 is the check digit (``0-9`` or ``X``).
* Licence plates of the mainland (GA 36): ordinary ``沪A12345``, new-energy
  8-character plates ``粤B·D12345`` / ``京AD12345`` / ``粤B12345D``, special
  plates ending in 警/学/挂/领/港/澳/试/超, embassy ``使123456``, armed police ``WJ…``.
* Phone numbers: CN mobile ``1[3-9]\\d{9}`` (optionally ``+86``), landlines
  with area code, 400/800 and 95xxx service numbers, E.164 international.

Every failure raises ``CNValidationError`` with a ``code`` and a ``{zh, en}``
message that says how to fix the value.
"""
from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import NamedTuple


class CNValidationError(ValueError):
    def __init__(self, code: str, zh: str, en: str):
        self.code = code
        self.message = {"zh": zh, "en": en}
        super().__init__(en)


_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), None)


def _clean(value: str) -> str:
    """Full-width -> half-width, no zero-width characters, upper case."""
    value = str(value)
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value).translate(_ZERO_WIDTH)
    return value.strip().upper()


# -- resident ID numbers ------------------------------------------------------------------------

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"
# provincial codes (first two digits); 83 = residence permits of Taiwan residents, 91-93 = foreigners' permanent residence
ID_PROVINCES = frozenset({
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
    "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65",
    "71", "81", "82", "83", "91", "92", "93",
})


class IdCard(NamedTuple):
    number: str             # canonical 18 characters, upper-case X
    birth_date: dt.date
    gender: str             # 'M' or 'F' (odd / even 17th digit)
    region: str             # the 6-digit administrative code


def id_card_check_digit(first17: str) -> str:
    """The 18th character for the first 17 digits (ISO 7064 MOD 11-2)."""
    if not re.fullmatch(r"\d{17}", first17):
        raise ValueError("need exactly 17 digits")
    return ID_CHECK[sum(int(c) * w for c, w in zip(first17, ID_WEIGHTS)) % 11]


def upgrade_id_card_15(number: str) -> str:
    """A 15-digit number (19YYMMDD implied) -> the 18-character number."""
    if not re.fullmatch(r"\d{15}", number):
        raise ValueError("need exactly 15 digits")
    first17 = number[:6] + "19" + number[6:]
    return first17 + id_card_check_digit(first17)


def validate_id_card(value: str, *, today: dt.date | None = None, allow_legacy: bool = False) -> IdCard:
    """Check an ID number; returns the canonical number and what it encodes."""
    s = re.sub(r"[\s-]", "", _clean(value))
    if allow_legacy and re.fullmatch(r"\d{15}", s):
        s = upgrade_id_card_15(s)
    elif re.fullmatch(r"\d{15}", s):
        raise CNValidationError("id_card_legacy", "这是旧版15位身份证号，请填写18位号码",
                                "This is an old 15-digit ID number; enter the 18-character number")
    if not re.fullmatch(r"\d{17}[\dX]", s):
        raise CNValidationError("invalid_id_card", f"身份证号应为18位：17位数字加1位数字或X（当前{len(s)}位）",
                                f"An ID number has 18 characters: 17 digits and a digit or X (got {len(s)})")
    if s[:2] not in ID_PROVINCES:
        raise CNValidationError("id_card_region", "身份证号前两位不是有效的省份代码，请核对",
                                "The first two digits are not a valid province code; please check the number")
    try:
        birth = dt.date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
    except ValueError:
        raise CNValidationError("id_card_birth_date", f"身份证号中的出生日期 {s[6:14]} 不存在，请核对第7-14位",
                                f"The birth date {s[6:14]} in the ID number does not exist; check digits 7-14") from None
    today = today or dt.date.today()
    if birth > today or birth.year < 1880:
        raise CNValidationError("id_card_birth_date", f"身份证号中的出生日期 {birth.isoformat()} 不合理，请核对第7-14位",
                                f"The birth date {birth.isoformat()} in the ID number is not plausible; check digits 7-14")
    if id_card_check_digit(s[:17]) != s[17]:
        raise CNValidationError("id_card_checksum", "身份证号校验位不符，请逐位核对是否录入有误",
                                "The ID number's check character does not match; please check each digit")
    return IdCard(s, birth, "M" if int(s[16]) % 2 else "F", s[:6])


def is_valid_id_card(value: str, **kw) -> bool:
    try:
        validate_id_card(value, **kw)
        return True
    except CNValidationError:
        return False


# -- VIN ------------------------------------------------------------------------------------

VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
VIN_VALUES = {**{str(d): d for d in range(10)},
              **dict(zip("ABCDEFGH", range(1, 9))), **dict(zip("JKLMN", range(1, 6))), "P": 7, "R": 9,
              **dict(zip("STUVWXYZ", range(2, 10)))}


def vin_check_digit(vin: str) -> str:
    """The check digit (position 9) of a 17-character VIN; position 9 itself is ignored."""
    vin = _clean(vin)
    if len(vin) != 17 or any(c not in VIN_VALUES for c in vin[:8] + vin[9:]):
        raise ValueError("need 17 VIN characters (no I, O, Q)")
    r = sum(VIN_VALUES[c] * w for c, w in zip(vin, VIN_WEIGHTS) if w) % 11
    return "X" if r == 10 else str(r)


def validate_vin(value: str, *, check_digit: bool = True) -> str:
    """-> the canonical VIN (upper case, no spaces or dashes)."""
    s = re.sub(r"[\s-]", "", _clean(value))
    if len(s) != 17:
        raise CNValidationError("invalid_vin", f"车架号（VIN）应为17位，当前{len(s)}位",
                                f"A VIN has 17 characters (got {len(s)})")
    bad = sorted({c for c in s if c not in VIN_VALUES})
    if bad:
        if set(bad) & set("IOQ"):
            raise CNValidationError("invalid_vin", "车架号不含字母 I、O、Q（易与 1、0 混淆），请核对",
                                    "A VIN never contains I, O or Q (they look like 1 and 0); please check it")
        raise CNValidationError("invalid_vin", "车架号只能包含数字和大写字母", "A VIN has only digits and capital letters")
    if check_digit and vin_check_digit(s) != s[8]:
        raise CNValidationError("vin_checksum", "车架号第9位校验位不符，请逐位核对是否录入有误",
                                "The VIN's check digit (9th character) does not match; please check each character")
    return s


def is_valid_vin(value: str, **kw) -> bool:
    try:
        validate_vin(value, **kw)
        return True
    except CNValidationError:
        return False


# -- licence plates ---------------------------------------------------------------------------

PROVINCE_ABBR = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
_P = f"[{PROVINCE_ABBR}]"
_AUTH = "[A-HJ-Z]"                 # issuing authority letter (no I)
_SER = "[A-HJ-NP-Z0-9]"            # serial characters: no I, no O
PLATE_KINDS = (
    ("ordinary", re.compile(f"{_P}{_AUTH}{_SER}{{5}}")),
    ("new_energy", re.compile(f"{_P}{_AUTH}(?:[A-HJK]{_SER}\\d{{4}}|\\d{{5}}[DF])")),
    ("special", re.compile(f"{_P}{_AUTH}{_SER}{{4}}[警学挂领港澳试超]")),
    ("embassy", re.compile(r"使\d{6}|\d{6}使")),
    ("armed_police", re.compile(f"WJ{_P}?{_SER}{{5}}")),
)
_SEPARATORS = re.compile(r"[\s·•・.\-_]")


def normalize_plate(value: str) -> str:
    """Upper case, no separators (``粤b·d12345`` -> ``粤BD12345``)."""
    return _SEPARATORS.sub("", _clean(value))


def validate_license_plate(value: str) -> tuple[str, str]:
    """-> ``(canonical, kind)``; kind is ordinary/new_energy/special/embassy/armed_police."""
    s = normalize_plate(value)
    for kind, pattern in PLATE_KINDS:
        if pattern.fullmatch(s):
            if kind == "ordinary" and not re.search(r"\d", s[2:]):
                break
            return s, kind
    if s and s[0] not in PROVINCE_ABBR and not s.startswith(("WJ", "使")) and not s[0].isdigit():
        raise CNValidationError("invalid_plate", f"车牌号应以省份简称开头（如 京、沪、粤），当前为“{s[0]}”",
                                f"A plate starts with a province character such as 京, 沪 or 粤 (got '{s[0]}')")
    if re.search("[IO]", s[2:]):
        raise CNValidationError("invalid_plate", "车牌号码中不使用字母 I 和 O（请改为数字 1 或 0）",
                                "Plates never use the letters I and O; use the digits 1 and 0")
    raise CNValidationError("invalid_plate", "车牌号格式不正确，如 沪A12345、新能源 粤B·D12345、京AD12345",
                            "Not a valid plate; e.g. 沪A12345, new-energy 粤B·D12345 or 京AD12345")


def format_plate(canonical: str) -> str:
    """Display form with the dot after the authority letter: ``粤B·D12345``."""
    if len(canonical) >= 7 and canonical[0] in PROVINCE_ABBR:
        return canonical[:2] + "·" + canonical[2:]
    return canonical


def is_valid_license_plate(value: str) -> bool:
    try:
        validate_license_plate(value)
        return True
    except CNValidationError:
        return False


# -- phone numbers ------------------------------------------------------------------------------

CN_MOBILE = re.compile(r"1[3-9]\d{9}")
E164 = re.compile(r"\+[1-9]\d{7,14}")
PHONE_KINDS = ("mobile", "landline", "service", "international")
_PHONE_PREFIX = re.compile(r"^(TEL:|电话[:：]?|手机[:：]?)")
_PHONE_JUNK = re.compile(r"[\s\-()（）.]")
_CN_MOBILE_INTL = re.compile(r"(?:\+86|0086|86)?(1[3-9]\d{9})")
_EXTENSION = re.compile(r"(?:转|分机|EXT\.?|X|#)\s*(\d{1,6})$")
_LANDLINE_EXT = re.compile(r"(\(?0\d{2,3}\)?[\s-]?[2-9]\d{6,7})[\s-](\d{1,6})")
_LANDLINE_LOCAL = re.compile(r"[2-9]\d{6,7}")
_CN_MOBILE_86 = re.compile(r"861[3-9]\d{9}")
_SERVICE_400 = re.compile(r"[48]00\d{7}")
_SERVICE_SHORT = re.compile(r"9[56]\d{3,6}|1[0-2]\d{3}")


def _digits_and_plus(value: str) -> str:
    s = _clean(value)
    if s[:1] in ("T", "电", "手"):
        s = _PHONE_PREFIX.sub("", s)
    return s


def normalize_cn_mobile(value: str) -> str:
    """``+86 138-0013-8000`` -> ``13800138000``; raises if not a CN mobile number."""
    s = _PHONE_JUNK.sub("", _digits_and_plus(value))
    m = _CN_MOBILE_INTL.fullmatch(s)
    if not m:
        raise CNValidationError("invalid_phone", "手机号格式不正确，应为11位中国大陆手机号，如 13800138000",
                                "Not a valid mobile number: expected 11 digits like 13800138000 or +8613800138000")
    return m.group(1)


def is_cn_mobile(value: str) -> bool:
    try:
        normalize_cn_mobile(value)
        return True
    except CNValidationError:
        return False


def validate_e164(value: str) -> str:
    """``+44 20 7946 0958`` / ``0044…`` -> ``+442079460958``."""
    s = _PHONE_JUNK.sub("", _digits_and_plus(value))
    if s.startswith("00"):
        s = "+" + s[2:]
    if not E164.fullmatch(s):
        raise CNValidationError("invalid_phone", "国际号码应以 + 和国家代码开头，共8-15位数字，如 +85291234567",
                                "An international number starts with + and the country code, 8-15 digits, e.g. +85291234567")
    return s


def _landline(digits: str, ext: str | None) -> str | None:
    """National landline digits with leading 0 -> ``021-58880000``."""
    if not digits.startswith("0") or digits.startswith("00"):
        return None
    area_len = 3 if digits[1] in "12" else 4
    area, local = digits[:area_len], digits[area_len:]
    if not _LANDLINE_LOCAL.fullmatch(local):
        return None
    return f"{area}-{local}" + (f"-{ext}" if ext else "")


def parse_phone(value: str, *, kinds: tuple[str, ...] | list[str] | None = None, region: str | None = "CN") -> tuple[str, str]:
    """-> ``(canonical, kind)``.

    Canonical forms: mobile ``13800138000`` (no +86), landline ``021-58880000``
    (``-123`` for an extension), service ``400-820-8820`` / ``95588``,
    international ``+85291234567``.  ``region`` other than CN accepts only
    international numbers (a ``+`` or ``00`` prefix).
    """
    allowed = tuple(kinds or PHONE_KINDS)
    s = _digits_and_plus(value)
    ext = None
    m = _EXTENSION.search(s) if not s.isdigit() else None
    if m:
        ext, s = m.group(1), s[: m.start()]
    elif not s.isdigit():
        m = _LANDLINE_EXT.fullmatch(s)
        if m:
            s, ext = m.group(1), m.group(2)
    compact = _PHONE_JUNK.sub("", s) if not s.isdigit() else s
    if compact.startswith("00") and not compact.startswith("0086"):
        compact = "+" + compact[2:]
    if compact.startswith("0086"):
        compact = "+86" + compact[4:]
    found: tuple[str, str] | None = None
    if compact.startswith("+86"):
        national = compact[3:]
        if CN_MOBILE.fullmatch(national):
            found = (national, "mobile")
        elif (ll := _landline("0" + national if not national.startswith("0") else national, ext)):
            found = (ll, "landline")
    elif compact.startswith("+"):
        if E164.fullmatch(compact):
            found = (compact, "international")
    elif (region or "CN").upper() == "CN":
        if _CN_MOBILE_86.fullmatch(compact):
            compact = compact[2:]
        if CN_MOBILE.fullmatch(compact):
            found = (compact, "mobile")
        elif _SERVICE_400.fullmatch(compact):
            found = (f"{compact[:3]}-{compact[3:6]}-{compact[6:]}", "service")
        elif _SERVICE_SHORT.fullmatch(compact):
            found = (compact, "service")
        elif (ll := _landline(compact, ext)):
            found = (ll, "landline")
    if found and found[1] in allowed:
        return found
    if allowed == ("mobile",):
        raise CNValidationError("invalid_phone", "手机号格式不正确，应为11位中国大陆手机号，如 13800138000",
                                "Not a valid mobile number: expected 11 digits like 13800138000 or +8613800138000")
    if found:
        names_zh = {"mobile": "手机号", "landline": "固定电话", "service": "400/800/95服务号码", "international": "国际号码"}
        raise CNValidationError("phone_kind", f"此处不接受{names_zh[found[1]]}，请填写：{'、'.join(names_zh[k] for k in allowed)}",
                                f"A {found[1]} number is not accepted here; use: {', '.join(allowed)}")
    if (region or "CN").upper() != "CN":
        raise CNValidationError("invalid_phone", "请填写带国家代码的号码，如 +85291234567",
                                "Enter the number with its country code, e.g. +85291234567")
    raise CNValidationError("invalid_phone",
                            "电话号码格式不正确：手机号如 13800138000，固话需带区号如 021-58880000，国际号码如 +85291234567",
                            "Not a valid phone number: mobile like 13800138000, landline with area code like 021-58880000, "
                            "or international like +85291234567")
