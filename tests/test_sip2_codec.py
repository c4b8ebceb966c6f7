"""The SIP2 codec against the standard: checksums, dates, framing, parsing, formatting.

Requests are built and responses decoded by ``tests/sip2_client.py``, which
shares no code with the server, so the two readings of the standard check
each other.
"""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sip2 import codec
from tests import sip2_client as sc

NOW = sc.sip_date()


@pytest.mark.parametrize("body, expected", [
    (b"96AZ", "FEF6"),                 # Request SC Resend, as every ACS sends it
    (b"97AZ", "FEF5"),                 # Request ACS Resend
    (b"9300CNuser|COpass|AY1AZ", sc.checksum(b"9300CNuser|COpass|AY1AZ")),
])
def test_checksum_is_the_twos_complement_of_the_byte_sum(body: bytes, expected: str) -> None:
    assert codec.checksum(body) == expected == sc.checksum(body)
    assert (sum(body) + int(expected, 16)) & 0xFFFF == 0


@given(st.binary(max_size=300))
def test_checksums_agree_with_the_independent_client(data: bytes) -> None:
    assert codec.checksum(data) == sc.checksum(data)


def test_dates_are_yyyymmddzzzzhhmmss() -> None:
    when = datetime(2026, 11, 22, 10, 5, 9, tzinfo=UTC)
    assert codec.format_date(when, utc=True) == "20261122   Z100509"
    local = codec.format_date(when)
    assert local[8:12] == "    " and codec.parse_date(local) == when
    assert codec.parse_date("20261122   Z100509") == when
    assert codec.parse_date(" " * 18) is None
    for bad in ("2026112   Z1005099", "20261322    100509", "20261122+0500100509", "x" * 18):
        with pytest.raises(ValueError):
            codec.parse_date(bad)


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_framer_cuts_the_same_messages_however_the_bytes_arrive(cuts: list[int]) -> None:
    stream = b"9900802.00\r\n23001" + NOW.encode() + b"AOx|AAR1|AC|AD|\r\r97AZFEF5\r"
    framer = codec.Framer()
    out, pos, i = [], 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        framer.feed(stream[pos:pos + step])
        pos, i = pos + step, i + 1
        while (msg := framer.next_message()) is not None:
            out.append(msg)
    assert out == [b"9900802.00", b"23001" + NOW.encode() + b"AOx|AAR1|AC|AD|", b"97AZFEF5"]
    assert not framer.partial


def test_framer_refuses_a_message_without_end() -> None:
    framer = codec.Framer()
    framer.feed(b"23" + b"x" * codec.MAX_MESSAGE)
    with pytest.raises(codec.Overlong):
        framer.next_message()


def test_every_request_the_client_builds_parses() -> None:
    bodies = {
        "93": "9300CNk1|COpw|CPhall|", "99": "9900802.00",
        "23": f"23001{NOW}AOi|AAR1|AC|AD1234|",
        "63": f"63001{NOW}  Y       AOi|AAR1|AC|AD|BP1|BQ5|",
        "11": f"11YN{NOW}{sc.BLANK_DATE}AOi|AAR1|ABC1|AC|AD|",
        "09": f"09N{NOW}{NOW}APhall|AOi|ABC1|AC|", "17": f"17{NOW}AOi|ABC1|AC|",
        "29": f"29NN{NOW}{sc.BLANK_DATE}AOi|AAR1|AD|ABC1|AC|", "65": f"65{NOW}AOi|AAR1|AD|AC|",
        "35": f"35{NOW}AOi|AAR1|AC|", "37": f"37{NOW}0400KZTBV5.00|AOi|AAR1|AC|BKt1|",
        "15": f"15+{NOW}AOi|AAR1|ABC1|AC|", "01": f"01N{NOW}AOi|ALwhy|AAR1|AC|",
        "25": f"25{NOW}AOi|AAR1|AC|",
    }
    for seq, (code, body) in enumerate(bodies.items()):
        req = codec.parse_request(sc.with_trailer(body.encode(), seq))
        assert (req.command, req.seq, req.checksummed) == (code, str(seq % 10), True)
        plain = codec.parse_request(body.encode())
        assert plain.fields == req.fields and plain.fixed == req.fixed and plain.seq is None
    assert codec.parse_request(bodies["63"].encode()).fixed["summary"] == "  Y       "
    assert codec.parse_request(bodies["37"].encode()).get("BV") == "5.00"


@pytest.mark.parametrize("body, why", [
    (f"11YN{NOW}", "truncated"),
    (f"11YX{NOW}{sc.BLANK_DATE}AOi|AAR1|ABC1|AC|", "expected Y or N"),
    (f"11YN{NOW}{sc.BLANK_DATE}AOi|AAR1|AC|", "missing AB"),
    (f"11YN{NOW}{sc.BLANK_DATE}AOi|AAR1|AB{'9' * 65}|AC|", "longer than 64"),
    (f"11YN{NOW}{sc.BLANK_DATE}AOi|AAR1|AAR2|ABC1|AC|", "appears twice"),
    (f"11YN{NOW}{sc.BLANK_DATE}AOi|AAR1|ABC1|AC", "no '|' terminator"),
    (f"11YN{NOW}{sc.BLANK_DATE}AOi|AAR\x001|ABC1|AC|", "control characters"),
    (f"23001{NOW[:8]}+0500{NOW[12:]}AOi|AAR1|AC|AD|", "time zone"),
    (f"23001{NOW}AOi|aaR1|AC|AD|", "not a field identifier"),
])
def test_malformed_requests_say_why_and_keep_whom_they_were_about(body: str, why: str) -> None:
    with pytest.raises(codec.Malformed) as err:
        codec.parse_request(body.encode())
    assert why in err.value.reason
    assert err.value.command == body[:2]


def test_a_bad_trailer_is_a_checksum_error_and_an_unknown_code_is_unknown() -> None:
    good = sc.with_trailer(b"9900802.00", 3)
    assert codec.parse_request(good).seq == "3"
    for bad in (good[:-1] + b"0" if good[-1:] != b"0" else good[:-1] + b"1",  # one digit off
                b"9900802.00AYxAZ" + good[-4:], b"9900802.00AY1AZ12G4", b"9900802.00AY1AZ12"):
        with pytest.raises(codec.ChecksumError):
            codec.parse_request(bad)
    with pytest.raises(codec.UnknownCommand):
        codec.parse_request(b"42hello|")
    with pytest.raises(codec.Malformed):
        codec.parse_request(b"23\xff\xfe", "utf-8")


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_a_sip2_error(data: bytes) -> None:
    try:
        codec.parse_request(data.replace(b"\r", b""))
    except codec.Sip2Error:
        pass


def test_formatted_responses_pass_the_independent_decoder() -> None:
    date = codec.format_date(datetime.now(UTC))
    raw = codec.format_message(
        "12", {"ok": "1", "renewal ok": "N", "magnetic media": "U", "desensitize": "Y",
               "transaction date": date},
        [("AF", "Due back"), ("AH", codec.format_day(datetime.now(UTC).date())), ("AO", "i"),
         ("AA", "R1"), ("AB", "C1"), ("AJ", "Абай | жолы"), ("AF", "Thank you"), ("BK", "")],
        seq="7", error_detection=True)
    resp = sc.decode(raw, expect_seq=7)
    assert list(resp.fields) == ["AO", "AA", "AB", "AJ", "AH", "AF"]    # the standard's order
    assert resp["AJ"] == "Абай / жолы" and resp.all("AF") == ["Due back", "Thank you"]
    assert "BK" not in resp.fields                                    # empty optional: left out
    with pytest.raises(ValueError):
        codec.format_message("12", {"ok": "2"})
    with pytest.raises(ValueError):
        codec.format_message("94", {"ok": "1"}, [("AF", "no such field in 94")])


def test_cp850_spells_cyrillic_in_latin_letters_and_keeps_its_own() -> None:
    raw = codec.format_message("36", {"end session": "Y", "transaction date": NOW},
                               [("AO", "i"), ("AA", "R1"), ("AF", "Сау болыңыз, José!")],
                               charset="cp850", error_detection=True, seq="1")
    resp = sc.decode(raw, "cp850", expect_seq=1)
    assert resp["AF"] == "Sau bolyngyz, José!"


def test_log_lines_mask_passwords() -> None:
    line = codec.fields_of(b"9300CNk1|COsecret|CPhall|")
    assert "secret" not in line and "CNk1" in line
    assert "1234" not in codec.fields_of(f"23001{NOW}AOi|AAR1|AC|AD1234|".encode())
