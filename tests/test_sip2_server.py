"""The SIP2 server on a real TCP port: login, status, checksums, resend, sessions, TLS, bad input.

A branch node is built in-process by ``create_app`` with its SIP2 server on a
free port; the tests talk to it only through sockets, with the independent
client of ``tests/sip2_client.py``. The per-message tests are in
``test_sip2_messages.py`` and use the same ``branch`` fixture.
"""
from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from edge import store as es
from edge.app import create_app, shutdown
from edge.sip2 import accounts
from kitap.procs import Mosquitto, wait_for
from tests import sip2_client as sc

INST = "kitap-test"
KIOSK, KIOSK_PW = "k1", "kiosk-secret-1"
PINS = {"R0001": "1234", "R0002": "5678", "R0004": "1234", "R0005": "4321"}


def seed(path: Path) -> None:
    """A branch that knows a few titles, copies, readers and holds, and four kiosks."""
    store = es.EdgeStore("b-test", str(path))
    store.seed(
        titles=[{"id": "T1", "title": "Абай жолы", "author": "Мұхтар Әуезов"},
                {"id": "T2", "title": "Encyclopaedia", "item_type": "reference"},
                {"id": "T3", "title": "Held title", "holds_waiting": 1}],
        copies=[*({"barcode": f"C0{i}", "title_id": "T1"} for i in range(1, 10)),
                {"barcode": "REF1", "title_id": "T2"}, {"barcode": "H01", "title_id": "T3"}],
        readers=[{"card": card, "name": name, "category": cat, "pin_hash": es.hash_pin(pin),
                  "blocked_reason": blocked, "fees_owed": fees}
                 for card, name, cat, pin, blocked, fees in (
                     ("R0001", "Әлия Қасым", "adult", "1234", None, 0),
                     ("R0002", "Ержан Әбіл", "adult", "5678", None, 0),
                     ("R0003", "Blocked Reader", "adult", "1111", "3 books overdue", 0),
                     ("R0004", "José Owes", "adult", "1234", None, 150000),
                     ("R0005", "Child Reader", "child", "4321", None, 0))])
    es.Hold.create(id="H1", title_id="T3", copy="H01", reader="R0002", status="ready",
                   expires=datetime.now(UTC).date() + timedelta(days=7))
    es.Hold.create(id="H2", title_id="T1", reader="R0001", status="waiting")
    accounts.init_tables()
    accounts.add_account(KIOSK, KIOSK_PW, institution=INST, location="hall",
                         library_name="Central library",
                         sort_bins={"shelf": "S", "hold": "H", "transfer": "T"})
    accounts.add_account("k2", "limited-kiosk", institution=INST, allowed=["23", "17"],
                         alerts=False)
    accounts.add_account("k850", "cp850-kiosk", institution=INST, charset="cp850")
    accounts.add_account("kpin", "pin-kiosk-1", institution=INST, pin_policy="required")
    es.db.close()


@dataclass
class Branch:
    """A branch node with its SIP2 server, as the tests reach it."""

    app: Flask
    port: int

    @property
    def store(self) -> es.EdgeStore:
        return self.app.extensions["kitap.store"]

    def client(self, **kw: Any) -> sc.Client:
        return sc.Client(self.port, **kw)

    def kiosk(self, name: str = KIOSK, password: str = KIOSK_PW, **kw: Any) -> sc.Client:
        c = self.client(**kw)
        assert c.login(name, password).fixed["ok"] == "1"
        return c

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        rows = self.store.pending(0, 10_000)
        return [env for _, env in rows if type_ is None or env["type"] == type_]


_TEMPLATE: dict[str, bytes] = {}


def start_branch(tmp_path: Path, **config: Any) -> Branch:
    db = tmp_path / "edge.db"
    if not db.exists():
        if not _TEMPLATE:   # seed once (hashing kiosk passwords is slow on purpose), then copy
            seed(tmp_path / "template.db")
            _TEMPLATE["db"] = (tmp_path / "template.db").read_bytes()
        db.write_bytes(_TEMPLATE["db"])
    app = create_app({"NODE_ID": "b-test", "NODE_KIND": "branch", "DATABASE": str(db),
                      "START_SYNC": False, "SIP2_PORT": 0, **config})
    return Branch(app, app.extensions["kitap.sip2"].port)


def stop_branch(b: Branch) -> None:
    """Stop the node and let go of its database."""
    shutdown(b.app)
    es.db.close()


@pytest.fixture
def branch(tmp_path: Path) -> Iterator[Branch]:
    """A seeded branch node, its link to the cloud down, SIP2 on a free port."""
    b = start_branch(tmp_path)
    yield b
    stop_branch(b)


def near_now(sip_date: str, slack: float = 120.0) -> bool:
    """True if a SIP date is within ``slack`` seconds of now."""
    zone = UTC if sip_date[8:12] == "   Z" else None
    naive = datetime.strptime(sip_date[:8] + sip_date[12:], "%Y%m%d%H%M%S")
    when = naive.replace(tzinfo=zone or sc.KIOSK_ZONE)
    return abs((when - datetime.now(UTC)).total_seconds()) < slack


def test_login_and_the_acs_status(branch: Branch) -> None:
    c = branch.client()
    refused = c.login(KIOSK, "wrong password")
    assert refused.fixed == {"ok": "0"} and refused.fields == {}
    ok = c.login(KIOSK, KIOSK_PW, "entrance")
    assert ok.fixed == {"ok": "1"} and ok.fields == {}
    st = c.sc_status()
    sync = st.fixed.pop("datetime_sync")
    assert near_now(sync)
    assert st.fixed == {"online": "N", "checkin_ok": "Y", "checkout_ok": "Y",
                        "renewal_policy": "Y", "status_update_ok": "N", "offline_ok": "Y",
                        "timeout": "050", "retries": "003", "version": "2.00"}
    assert st["AO"] == INST and st["AM"] == "Central library" and st["AN"] == "entrance"
    # 23 11 09 01 99 97 93 63 35 37 17 19 25 15 29 65: all but 19 Item Status Update.
    assert st["BX"] == "YYYYYYYYYYYNYYYY"
    assert "offline from the central system" in st.screen
    c.close()
    limited = branch.kiosk("k2", "limited-kiosk")
    st = limited.sc_status()
    assert (st.fixed["checkin_ok"], st.fixed["checkout_ok"], st.fixed["renewal_policy"]) == \
        ("N", "N", "N")
    assert st["BX"] == "YNNNYYYNNNYNNNNN" and st.get("AN") is None
    no = limited.checkout(INST, "R0001", "C01", "1234")
    assert no.fixed["ok"] == "0" and "may not do that here" in no.screen
    assert branch.events("loan.checkout") == []


def test_a_bad_checksum_is_answered_with_96_and_97_resends_the_last_answer(branch: Branch
                                                                           ) -> None:
    c = branch.kiosk()
    good = sc.with_trailer(b"9900802.00", 5)
    bad = good[:-4] + (b"0000" if good[-4:] != b"0000" else b"0001")
    c.send_raw(bad + b"\r")
    assert c.read_raw() == b"96AZFEF6"
    c.send_raw(good + b"\r")
    status = c.read_raw()
    assert sc.decode(status, expect_seq=5).code == "98"
    c.send_raw(b"97AZFEF5\r")
    assert c.read_raw() == status                       # the very same bytes
    c.send_raw(b"97\r")
    assert c.read_raw() == status


def test_a_message_sent_again_with_its_sequence_number_is_not_done_twice(branch: Branch
                                                                         ) -> None:
    c = branch.kiosk()
    body = sc.with_trailer(f"11NN{sc.sip_date()}{sc.BLANK_DATE}AO{INST}|AAR0001|ABC01|AC|"
                           f"AD1234|".encode(), 3)
    c.send_raw(body + b"\r")
    first = c.read_raw()
    assert sc.decode(first, expect_seq=3).fixed["ok"] == "1"
    c.send_raw(body + b"\r")          # the kiosk did not see the answer and tries again
    assert c.read_raw() == first
    assert len(branch.events("loan.checkout")) == 1


def test_nothing_before_a_login_and_one_session_per_kiosk(branch: Branch) -> None:
    anon = branch.client()
    anon.send_raw(f"23001{sc.sip_date()}AO{INST}|AAR0001|AC|AD|\r".encode())
    assert anon.read_raw() == b""                       # closed, nothing said
    first = branch.kiosk()
    second = branch.kiosk()                             # the kiosk rebooted
    assert first.read_raw() == b""                      # the older connection is closed
    assert second.sc_status().code == "98"
    wrong = branch.client()
    for _ in range(3):
        assert wrong.login(KIOSK, "not it").fixed["ok"] == "0"
    assert wrong.read_raw() == b""                      # three wrong logins: hung up


def test_bad_input_is_answered_or_dropped_and_changes_nothing(branch: Branch,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    c = branch.kiosk()
    c.send_raw(b"XYZZY\r")                              # unknown command: no answer
    c.send_raw(b"\xff\xfe\r")                           # not even a command
    assert c.sc_status().code == "98"                   # ... and the session goes on
    trunc = c.call(f"11NN{sc.sip_date()}")
    assert trunc.fixed["ok"] == "0" and "truncated" in trunc.screen
    bad_date = c.call(f"11NN{sc.sip_date()}AO{INST}|AAR0001|ABC01|AC|")   # no nb due date
    assert bad_date.fixed["ok"] == "0" and "nb due date" in bad_date.screen
    assert (bad_date["AA"], bad_date["AB"]) == ("R0001", "C01")
    long_item = c.checkout(INST, "R0001", "C" * 65, "1234")
    assert long_item.fixed["ok"] == "0" and "longer than 64" in long_item.screen
    twice = c.call(f"11NN{sc.sip_date()}{sc.BLANK_DATE}AO{INST}|AAR0001|AAR0002|ABC01|AC|")
    assert twice.fixed["ok"] == "0" and "appears twice" in twice.screen
    other = c.checkout("another-library", "R0001", "C01", "1234")
    assert other.fixed["ok"] == "0" and "Wrong institution" in other.screen
    c.send_raw(sc.with_trailer(f"17{sc.sip_date()}AO{INST}|ABC".encode() + b"\xff\xfe|", 9)
               + b"\r")
    not_utf8 = sc.decode(c.read_raw(), expect_seq=9)
    assert not_utf8.code == "18" and "not valid utf-8" in not_utf8.screen
    update = c.call(f"19{sc.sip_date()}AO{INST}|ABC01|AC|CHnew|")
    assert update.code == "20" and update.fixed["properties_ok"] == "0"
    assert branch.events() == []                        # no wrong transaction

    c.send_raw(b"23" + b"x" * 3000)                     # no CR in sight: dropped
    assert c.read_raw() == b""
    monkeypatch.setattr("edge.sip2.server.PARTIAL_TIMEOUT", 0.3)
    shutdown(branch.app)
    quick = start_branch(Path(branch.app.config["DATABASE"]).parent)   # the same node, again
    try:
        stalled = quick.kiosk()
        stalled.send_raw(f"23001{sc.sip_date()}AO{INST}|AAR00".encode())   # ... and stops
        t0 = time.monotonic()
        assert stalled.read_raw() == b""
        assert time.monotonic() - t0 < 5
        assert quick.kiosk().sc_status().code == "98"   # the server serves on
    finally:
        shutdown(quick.app)


def test_a_fault_of_ours_is_a_refusal_and_the_session_goes_on(branch: Branch,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    def broken(*args: Any, **kw: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(branch.store, "checkout", broken)
    c = branch.kiosk()
    r = c.checkout(INST, "R0001", "C01", "1234")
    assert r.fixed["ok"] == "0" and r.screen == "Could not be done: please try again or ask staff."
    assert (r["AA"], r["AB"]) == ("R0001", "C01")
    assert branch.events() == [] and c.sc_status().code == "98"


def test_cp850_kiosk_gets_latin_letters_with_a_checksum_over_its_own_bytes(branch: Branch
                                                                           ) -> None:
    c = branch.kiosk("k850", "cp850-kiosk", charset="cp850")
    r = c.patron_status(INST, "R0001", "1234")
    assert r["AE"] == "Aliya Qasym"
    r = c.patron_status(INST, "R0004", "1234")
    assert r["AE"] == "José Owes" and "é".encode("cp850") in r.raw


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True, timeout=60)
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no openssl to make a test certificate: {exc}")
    b = start_branch(tmp_path, SIP2_TLS_CERT=str(cert), SIP2_TLS_KEY=str(key))
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        c = b.kiosk(tls=ctx)
        assert c.sc_status()["AO"] == INST
        plain = socket.create_connection(("127.0.0.1", b.port), timeout=5)
        plain.sendall(b"9300CNk1|COkiosk-secret-1|\r")     # plain text on a TLS port
        try:
            heard = plain.recv(100)                          # a TLS alert, or nothing
        except ConnectionResetError:
            heard = b""
        assert not heard.startswith(b"94")
        plain.close()
        assert b.kiosk(tls=ctx).sc_status().code == "98"
    finally:
        shutdown(b.app)
        es.db.close()


@pytest.mark.integration
def test_on_line_status_follows_the_link_to_the_cloud(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    b = start_branch(tmp_path, START_SYNC=True, MQTT_PORT=broker.port)
    try:
        c = b.kiosk()
        wait_for(lambda: c.sc_status().fixed["online"] == "Y", 15, interval=0.2,
                 what="on-line Y")
        assert "offline" not in c.sc_status().screen
        broker.kill()
        wait_for(lambda: c.sc_status().fixed["online"] == "N", 15, interval=0.2,
                 what="on-line N")
        # Offline, the node still lends by its own rules.
        assert c.checkout(INST, "R0001", "C01", "1234").fixed["ok"] == "1"
    finally:
        shutdown(b.app)
        es.db.close()
        broker.stop()


def test_a_kiosk_that_reconnects_and_sends_its_checkout_again_gets_the_same_answer(
        branch: Branch) -> None:
    body = sc.with_trailer(f"11NN{sc.sip_date()}{sc.BLANK_DATE}AO{INST}|AAR0001|ABC01|AC|"
                           f"AD1234|".encode(), 4)
    first = branch.kiosk()
    first.send_raw(body + b"\r")
    answer = first.read_raw()
    assert sc.decode(answer, expect_seq=4).fixed["ok"] == "1"
    first.close()                         # the answer was lost with the connection
    again = branch.kiosk()                # the kiosk logs in anew and sends it again
    assert again.sc_status().code == "98"
    again.send_raw(body + b"\r")
    assert again.read_raw() == answer     # "lent", not "already on loan to you"
    assert len(branch.events("loan.checkout")) == 1
    other = branch.kiosk("k850", "cp850-kiosk")   # another kiosk's memory is its own
    other.send_raw(body + b"\r")
    assert sc.decode(other.read_raw(), expect_seq=4).fixed["ok"] == "0"


def test_a_connection_that_does_not_log_in_is_dropped_soon(tmp_path: Path) -> None:
    b = start_branch(tmp_path, SIP2_LOGIN_TIMEOUT=0.3)
    try:
        kiosk = b.kiosk()                 # logged in: the half-hour idle timeout applies
        silent = b.client()
        assert silent.read_raw() == b""   # closed by the server (the client waits 10 s)
        assert kiosk.sc_status().code == "98"
    finally:
        stop_branch(b)


def test_status_before_login_is_answered_only_when_the_node_allows_it(tmp_path: Path,
                                                                      branch: Branch) -> None:
    strict = branch.client()
    strict.send_raw(sc.with_trailer(b"9900802.00", 0) + b"\r")
    assert strict.read_raw() == b""       # the standard's way: log in first
    stop_branch(branch)
    b = start_branch(tmp_path, SIP2_STATUS_BEFORE_LOGIN=True)
    try:
        gate = b.client()
        st = gate.sc_status()
        assert st.fixed["online"] == "N" and st["AO"] == "" and st["BX"] == "N" * 16
        assert "offline from the central system" in st.screen
        gate.send_raw(f"23001{sc.sip_date()}AO{INST}|AAR0001|AC|AD|\r".encode())
        assert gate.read_raw() == b""     # anything else still needs the login
        late = b.client()
        assert late.sc_status().code == "98"
        assert late.login(KIOSK, KIOSK_PW).fixed["ok"] == "1"
        assert late.sc_status()["AO"] == INST
    finally:
        stop_branch(b)


def test_utc_dates_and_an_always_on_line_kiosk(branch: Branch) -> None:
    accounts.add_account("kutc", "utc-kiosk-1", institution=INST, utc_dates=True,
                         online_status="always")
    c = branch.kiosk("kutc", "utc-kiosk-1")
    st = c.sc_status()
    assert st.fixed["online"] == "Y"      # though the link is down (AF still says so)
    assert "offline from the central system" in st.screen
    assert st.fixed["datetime_sync"][8:12] == "   Z" and near_now(st.fixed["datetime_sync"])
    lent = c.checkout(INST, "R0001", "C01", "1234")
    due = es.local_day(datetime.now(UTC)) + timedelta(days=21)
    assert lent["AH"] == f"{due:%Y%m%d}   Z235959" and lent.fixed["date"][8:12] == "   Z"
    # A kiosk date in UTC is read as UTC: a no-block checkout two hours ago, to the second.
    then = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    nb = c.checkout(INST, "R0002", "C02", no_block=True,
                    when=f"{then:%Y%m%d}   Z{then:%H%M%S}")
    assert nb.fixed["ok"] == "1"
    assert es.Loan.get(es.Loan.copy == "C02").checked_out_at == then
    local = branch.kiosk().sc_status()       # another kiosk keeps local time, on-line N
    assert local.fixed["datetime_sync"][8:12] == "    " and local.fixed["online"] == "N"
