"""forms.cn_validators: ID numbers, VINs, licence plates, phone numbers.

Check characters are computed here by an independent implementation of the
standards (not copied from the module under test, and not trusted from
examples found on the web).
"""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forms import cn_validators as cn

TODAY = dt.date(2026, 11, 23)


# -- independent reference implementations ----------------------------------------------------

def ref_id_check(first17: str) -> str:
    """ISO 7064 MOD 11-2: weight of position i (1-based from the left, 18 total) is 2^(18-i) mod 11;
    the check value c makes sum + c ≡ 1 (mod 11); c == 10 is written X."""
    total = sum(int(d) * pow(2, 17 - i, 11) for i, d in enumerate(first17))
    c = (12 - total % 11) % 11
    return "X" if c == 10 else str(c)


def make_id(region: str = "440305", birth: str = "19880412", seq: str = "123") -> str:
    first17 = region + birth + seq
    return first17 + ref_id_check(first17)


def ref_vin_check(vin: str) -> str:
    """ISO 3779 / 49 CFR 565 (and GB 16735): transliterate, weight, sum mod 11, 10 -> X."""
    translit = {}
    for letters, start in (("ABCDEFGH", 1), ("JKLMN", 1), ("P", 7), ("R", 9), ("STUVWXYZ", 2)):
        for k, ch in enumerate(letters):
            translit[ch] = start + k
    weights = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2]
    total = sum((int(ch) if ch.isdigit() else translit[ch]) * w for ch, w in zip(vin, weights))
    r = total % 11
    return "X" if r == 10 else str(r)


def make_vin(body: str) -> str:
    """A 17-character VIN from one with any character at position 9, check digit fixed."""
    assert len(body) == 17
    return body[:8] + ref_vin_check(body) + body[9:]


def other_digit(c: str) -> str:
    return "0" if c != "0" else "1"


# -- resident ID numbers ------------------------------------------------------------------------

def test_reference_check_digit_matches_published_weights():
    # the classic weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 are 2^(17-i) mod 11
    assert [pow(2, 17 - i, 11) for i in range(17)] == list(cn.ID_WEIGHTS)


@pytest.mark.parametrize("region,birth,seq", [
    ("110105", "19491231", "002"),   # Beijing Chaoyang
    ("440305", "19880412", "123"),   # Shenzhen Nanshan
    ("310115", "20000229", "456"),   # Shanghai Pudong, leap day
    ("510107", "19700101", "999"),   # Chengdu
    ("650102", "20261123", "018"),   # born today
])
def test_valid_id_numbers(region, birth, seq):
    number = make_id(region, birth, seq)
    info = cn.validate_id_card(number, today=TODAY)
    assert info.number == number
    assert info.birth_date == dt.date(int(birth[:4]), int(birth[4:6]), int(birth[6:]))
    assert info.gender == ("M" if int(seq[2]) % 2 else "F")
    assert info.region == region
    assert cn.id_card_check_digit(number[:17]) == ref_id_check(number[:17])


def test_id_number_with_x_check_and_lower_case_and_spaces():
    # find a number whose check character is X
    number = next(n for n in (make_id("110105", "19491231", f"{i:03d}") for i in range(1000)) if n.endswith("X"))
    assert cn.validate_id_card(number.lower(), today=TODAY).number == number
    spaced = f"{number[:6]} {number[6:14]} {number[14:]}"
    assert cn.validate_id_card(spaced, today=TODAY).number == number
    full_width = number.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ"))
    assert cn.validate_id_card(full_width, today=TODAY).number == number


def test_wrong_checksum():
    number = make_id()
    bad = number[:17] + other_digit(number[17])
    with pytest.raises(cn.CNValidationError) as exc:
        cn.validate_id_card(bad, today=TODAY)
    assert exc.value.code == "id_card_checksum"
    assert exc.value.message["zh"] and exc.value.message["en"]


def test_impossible_birth_date_19990230():
    number = make_id("110105", "19990230", "123")       # correct checksum, date does not exist
    with pytest.raises(cn.CNValidationError) as exc:
        cn.validate_id_card(number, today=TODAY)
    assert exc.value.code == "id_card_birth_date"
    assert "19990230" in exc.value.message["zh"] and "19990230" in exc.value.message["en"]


def test_birth_date_in_the_future():
    number = make_id("110105", "20261124", "123")       # tomorrow
    with pytest.raises(cn.CNValidationError) as exc:
        cn.validate_id_card(number, today=TODAY)
    assert exc.value.code == "id_card_birth_date"


@pytest.mark.parametrize("value,code", [
    ("12345", "invalid_id_card"),
    ("11010519491231002Y", "invalid_id_card"),
    ("1101051949123100211", "invalid_id_card"),
    ("X1010519491231002X", "invalid_id_card"),
])
def test_malformed_id_numbers(value, code):
    with pytest.raises(cn.CNValidationError) as exc:
        cn.validate_id_card(value, today=TODAY)
    assert exc.value.code == code


def test_unknown_province_code():
    number = make_id("990105", "19880412", "123")
    with pytest.raises(cn.CNValidationError) as exc:
        cn.validate_id_card(number, today=TODAY)
    assert exc.value.code == "id_card_region"


def test_legacy_15_digit_numbers():
    legacy = "440305880412123"                          # 1988-04-12
    with pytest.raises(cn.CNValidationError) as exc:
        cn.validate_id_card(legacy, today=TODAY)
    assert exc.value.code == "id_card_legacy"
    info = cn.validate_id_card(legacy, today=TODAY, allow_legacy=True)
    assert info.number == make_id("440305", "19880412", "123")
    assert cn.upgrade_id_card_15(legacy) == info.number


@settings(max_examples=200, deadline=None)
@given(region=st.sampled_from(["110105", "310115", "440305", "510107", "330106"]),
       day=st.dates(min_value=dt.date(1930, 1, 1), max_value=TODAY),
       seq=st.integers(0, 999), pos=st.integers(0, 16), delta=st.integers(1, 9))
def test_every_single_digit_error_is_caught(region, day, seq, pos, delta):
    number = make_id(region, day.strftime("%Y%m%d"), f"{seq:03d}")
    assert cn.is_valid_id_card(number, today=TODAY)
    typo = number[:pos] + str((int(number[pos]) + delta) % 10) + number[pos + 1:]
    assert not cn.is_valid_id_card(typo, today=TODAY)        # MOD 11-2 catches every single substitution


# -- VIN ------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    "LSVAU2180N2183294",      # SAIC Volkswagen shape (position 9 recomputed)
    "LFV2A21K0A3038453",      # FAW-Volkswagen shape
    "LRW3E7FA0MC123456",      # Tesla Shanghai shape
    "1HGCM82633A004352",      # the classic North-American example
    "WVWZZZ1JZ3W386752",
])
def test_valid_vins(body):
    vin = make_vin(body)
    assert cn.vin_check_digit(vin) == ref_vin_check(vin)
    assert cn.validate_vin(vin) == vin
    assert cn.validate_vin(" " + vin.lower()[:8] + "-" + vin.lower()[8:] + " ") == vin


def test_known_published_vin_is_consistent_with_reference():
    # 1HGCM82633A004352 is the textbook example with check digit 3
    assert ref_vin_check("1HGCM82633A004352") == "3"
    assert cn.validate_vin("1HGCM82633A004352") == "1HGCM82633A004352"


def test_vin_with_x_check_digit():
    vin = next(v for v in (make_vin(f"LSVAU2180N{i:07d}") for i in range(2000)) if v[8] == "X")
    assert cn.validate_vin(vin) == vin


def test_vin_wrong_check_digit():
    vin = make_vin("LSVAU2180N2183294")
    bad = vin[:8] + ("1" if vin[8] != "1" else "2") + vin[9:]
    with pytest.raises(cn.CNValidationError) as exc:
        cn.validate_vin(bad)
    assert exc.value.code == "vin_checksum"
    assert exc.value.message["zh"] and exc.value.message["en"]
    assert cn.validate_vin(bad, check_digit=False) == bad     # European VINs have no check digit


@pytest.mark.parametrize("value", ["LSVAU2180N218329", "LSVAU2180N21832945", "LSVAU2I80N2183294", "LSVAU2O80N2183294",
                                   "LSVAU2Q80N2183294", "LSVAU2180N218329*"])
def test_malformed_vins(value):
    with pytest.raises(cn.CNValidationError) as exc:
        cn.validate_vin(value)
    assert exc.value.code == "invalid_vin"


# -- licence plates ---------------------------------------------------------------------------

@pytest.mark.parametrize("value,canonical,kind,shown", [
    ("京A12345", "京A12345", "ordinary", "京A·12345"),
    ("沪A12345", "沪A12345", "ordinary", "沪A·12345"),
    ("沪a·8c9d2", "沪A8C9D2", "ordinary", "沪A·8C9D2"),
    ("粤B·D12345", "粤BD12345", "new_energy", "粤B·D12345"),
    ("京AD12345", "京AD12345", "new_energy", "京A·D12345"),
    ("沪AF12345", "沪AF12345", "new_energy", "沪A·F12345"),
    ("粤B 12345D", "粤B12345D", "new_energy", "粤B·12345D"),
    ("川A1234学", "川A1234学", "special", "川A·1234学"),
    ("京A1234警", "京A1234警", "special", "京A·1234警"),
    ("粤B1234挂", "粤B1234挂", "special", "粤B·1234挂"),
    ("沪A1234领", "沪A1234领", "special", "沪A·1234领"),
    ("粤Z1234港", "粤Z1234港", "special", "粤Z·1234港"),
    ("使123456", "使123456", "embassy", "使123456"),
])
def test_valid_plates(value, canonical, kind, shown):
    assert cn.validate_license_plate(value) == (canonical, kind)
    assert cn.format_plate(canonical) == shown


@pytest.mark.parametrize("value", [
    "京A1234",        # too short
    "京A123456",      # 6 digits: not an ordinary plate, no D/F
    "A12345",         # no province
    "X京12345",
    "京AI2345",       # letter I
    "京AO2345",       # letter O
    "京AABCDE",       # no digit at all
    "京1A2345",       # authority must be a letter
    "粤BD123456",     # 7 characters after the letter: too long
    "粤B1234使",
])
def test_invalid_plates(value):
    with pytest.raises(cn.CNValidationError) as exc:
        cn.validate_license_plate(value)
    assert exc.value.code == "invalid_plate"
    assert exc.value.message["zh"] and exc.value.message["en"]


# -- phones -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value,canonical,kind", [
    ("13800138000", "13800138000", "mobile"),
    ("+8613800138000", "13800138000", "mobile"),
    ("+86 138-0013-8000", "13800138000", "mobile"),
    ("0086 13800138000", "13800138000", "mobile"),
    ("8613800138000", "13800138000", "mobile"),
    ("１３８００１３８０００", "13800138000", "mobile"),
    ("19912345678", "19912345678", "mobile"),
    ("021-58880000", "021-58880000", "landline"),
    ("(021) 5888 0000", "021-58880000", "landline"),
    ("010-12345678".replace("1234", "6234"), "010-62345678", "landline"),
    ("0571-8888888", "0571-8888888", "landline"),
    ("021-58880000-8001", "021-58880000-8001", "landline"),
    ("021-58880000转8001", "021-58880000-8001", "landline"),
    ("+86 21 5888 0000", "021-58880000", "landline"),
    ("400-820-8820", "400-820-8820", "service"),
    ("8008208820", "800-820-8820", "service"),
    ("95588", "95588", "service"),
    ("+85291234567", "+85291234567", "international"),
    ("+1 (415) 555-2671", "+14155552671", "international"),
    ("0044 20 7946 0958", "+442079460958", "international"),
])
def test_phone_numbers(value, canonical, kind):
    assert cn.parse_phone(value) == (canonical, kind)


@pytest.mark.parametrize("value", ["12800138000", "1380013800", "138001380001", "58880000", "+0123456789", "+12345",
                                   "abc", "021-1888000"])
def test_invalid_phone_numbers(value):
    with pytest.raises(cn.CNValidationError) as exc:
        cn.parse_phone(value)
    assert exc.value.code == "invalid_phone"


def test_mobile_only_and_kinds():
    assert cn.normalize_cn_mobile("+86 138 0013 8000") == "13800138000"
    assert cn.is_cn_mobile("13800138000") and not cn.is_cn_mobile("021-58880000")
    with pytest.raises(cn.CNValidationError) as exc:
        cn.parse_phone("021-58880000", kinds=["mobile"])
    assert exc.value.code == "invalid_phone" and "13800138000" in exc.value.message["zh"]
    with pytest.raises(cn.CNValidationError) as exc:
        cn.parse_phone("13800138000", kinds=["landline"])
    assert exc.value.code == "phone_kind"


def test_e164_and_other_regions():
    assert cn.validate_e164("+44 20 7946 0958") == "+442079460958"
    with pytest.raises(cn.CNValidationError):
        cn.validate_e164("13800138000")
    assert cn.parse_phone("+85291234567", region="HK") == ("+85291234567", "international")
    with pytest.raises(cn.CNValidationError):
        cn.parse_phone("91234567", region="HK")          # numbers without + need the country code
