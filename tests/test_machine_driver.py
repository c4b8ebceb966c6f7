"""MachineDriver against the firmware simulator as a real process on a real pty.

What the driver must do by itself: handshake, ACK and retransmit, report every
outcome of a dispense, and come back online -- with the same driver object --
after the controller reboots, loses its power, or its cable is pulled.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import serial

from edge.hardware import HardwareError, MachineDriver
from firmware_sim.control import ControlError
from firmware_sim.controller import Controller
from firmware_sim.runner import PtyPort
from protocol.frames import NEED_DATA, BadFrame, Cmd, Decoder, Frame, encode
from tests.machine_bench import Bench, Events, bench_for, wait_until

pytestmark = pytest.mark.integration

bench = pytest.fixture(bench_for, name="bench")


def test_handshake_goes_online_and_names_the_controller(bench: Bench) -> None:
    sim = bench.sim()
    drv, _ = bench.driver(sim)
    snap = sim.ctl.state()
    assert (drv.info["slots"], drv.info["boot_id"], drv.info["serial"]) == \
        (10, snap["boot_id"], snap["serial"])
    status = drv.status()
    assert (status["bin"], status["door"], status["chute"], status["delivery"]) == \
        (0, "closed", "open", None)
    assert "dispenses" not in status  # the heartbeat's reply stays short
    assert drv.status(logs=True)["dispenses"] == []
    assert drv.slot_scan() == {n: None for n in range(1, 11)}


def test_dispense_taken_names_the_intent(bench: Bench) -> None:
    sim = bench.sim("--auto-take", "0.2", loaded={3: "C0000123"})
    drv, events = bench.driver(sim)
    outcome = drv.dispense(3, intent="i-1", timeout=10)
    assert (outcome.result, outcome.slot, outcome.tag) == ("taken", 3, "C0000123")
    state = sim.state()
    assert state["slots"]["3"] is None and state["delivery"] is None
    assert state["dispenses"] == [{"intent": "i-1", "slot": 3, "tag": "C0000123",
                                   "outcome": "taken"}]
    assert events.wait(Cmd.ITEM_DISPENSED) == {"slot": 3, "tag": "C0000123", "intent": "i-1"}
    # The same intent twice is refused: a DISPENSE resent after a crash cannot lend twice.
    again = drv.dispense(3, intent="i-1", timeout=10)
    assert again.result == "error" and "already carried out (taken)" in again.reason


def test_dispense_empty_slot(bench: Bench) -> None:
    sim = bench.sim("--auto-take", "0.2")
    drv, _ = bench.driver(sim)
    outcome = drv.dispense(5, intent="i-2", timeout=10)
    assert (outcome.result, outcome.slot, outcome.tag) == ("empty", 5, None)
    assert sim.state()["dispenses"][-1]["outcome"] == "empty"


def test_jam_keeps_the_book_in_its_slot(bench: Bench) -> None:
    sim = bench.sim("--auto-take", "0.2", loaded={2: "C0000002"})
    drv, _ = bench.driver(sim)
    sim.ctl.fault("jam")
    assert drv.dispense(2, timeout=10).result == "jam"
    assert sim.state()["slots"]["2"] == "C0000002"
    # The armed fault was for one dispense only.
    assert drv.dispense(2, timeout=10).result == "taken"


def test_not_taken_goes_back_then_taken_by_hand(bench: Bench) -> None:
    sim = bench.sim("--take-timeout", "1", loaded={4: "C0000004"})
    drv, _ = bench.driver(sim)
    outcome = drv.dispense(4, timeout=10)
    assert (outcome.result, outcome.tag) == ("not_taken", "C0000004")
    assert sim.state()["slots"]["4"] == "C0000004"
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(drv.dispense, 4, timeout=10)
        wait_until(lambda: sim.ctl.state()["delivery"], what="book in the door")
        assert sim.ctl.take_item() == "C0000004"
        assert pending.result(timeout=10).result == "taken"
    assert sim.state()["slots"]["4"] is None


def test_card_and_pin_reach_on_event(bench: Bench) -> None:
    sim = bench.sim()
    _, events = bench.driver(sim)
    sim.ctl.present_card("R0042")
    sim.ctl.enter_pin("4821")
    assert events.wait(Cmd.CARD_PRESENTED) == {"card": "R0042"}
    assert events.wait(Cmd.PIN_ENTERED) == {"pin": "4821"}
    with pytest.raises(ControlError, match="4 to 8 digits"):
        sim.ctl.enter_pin("12a4")


@pytest.mark.parametrize("decision", ["accept", "reject"])
def test_return_decided_by_the_host(bench: Bench, decision: str) -> None:
    sim = bench.sim()
    drv, events = bench.driver(sim)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sim.ctl.insert_return, "C0000777", timeout=10)
        assert events.wait(Cmd.RETURN_ITEM_READ) == {"tag": "C0000777"}
        if decision == "accept":
            drv.accept_return("C0000777", intent="r-1")
        else:
            drv.reject_return("C0000777", "not a book of this network")
        reply = pending.result(timeout=15)
    if decision == "accept":
        assert reply["outcome"] == "accepted"
        assert sim.state()["bin"] == ["C0000777"]
        assert sim.state()["returns"][-1] == {"intent": "r-1", "tag": "C0000777",
                                              "outcome": "accepted"}
    else:
        assert (reply["outcome"], reply["reason"]) == ("rejected", "not a book of this network")
        assert sim.state()["bin"] == []
        assert sim.ctl.state()["display"] == "not a book of this network"


def test_the_last_book_fills_the_bin_and_closes_the_chute(bench: Bench) -> None:
    sim = bench.sim(bin_capacity=1)
    drv, events = bench.driver(sim)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sim.ctl.insert_return, "C0000001", timeout=10)
        events.wait(Cmd.RETURN_ITEM_READ)
        drv.accept_return("C0000001")
        assert pending.result(timeout=15)["outcome"] == "accepted"
    assert events.wait(Cmd.BIN_FULL) == {"bin": 1, "bin_capacity": 1}
    assert drv.status()["chute"] == "closed"
    # The chute does not take the next book, and cannot be opened until the bin is emptied.
    reply = sim.ctl.insert_return("C0000002", timeout=2)
    assert (reply["outcome"], reply["reason"]) == ("refused", "the return bin is full")
    with pytest.raises(HardwareError, match="bin is full"):
        drv.set_chute(True)
    sim.ctl.open_door(key=True)
    assert sim.ctl.empty_bin() == ["C0000001"]
    sim.ctl.close_door()
    drv.set_chute(True)
    assert drv.status()["chute"] == "open"


def test_service_door_opens_only_when_unlocked(bench: Bench) -> None:
    sim = bench.sim(loaded={1: "C0000001"})
    drv, events = bench.driver(sim)
    with pytest.raises(ControlError, match="locked"):
        sim.ctl.open_door()
    drv.unlock_service_door(30)
    assert drv.status()["locked"] is False
    sim.ctl.open_door()
    assert events.wait(Cmd.SERVICE_DOOR) == {"open": True}
    # No dispensing while a technician has the door open.
    outcome = drv.dispense(1, timeout=5)
    assert outcome.result == "error" and "service door is open" in outcome.reason
    assert sim.ctl.remove(1) == "C0000001"
    sim.ctl.load(2, "C0000009")
    sim.ctl.close_door()
    wait_until(lambda: events.of(Cmd.SERVICE_DOOR)[-1:] == [{"open": False}], what="door closed")
    assert drv.status()["locked"] is True
    scan = drv.slot_scan()
    assert (scan[1], scan[2]) == (None, "C0000009")


def test_refused_commands_change_nothing(bench: Bench) -> None:
    sim = bench.sim(loaded={1: "C0000001"})
    drv, _ = bench.driver(sim)
    before = sim.state()
    with pytest.raises(HardwareError, match="no slot 99"):
        drv.command(Cmd.DISPENSE, {"slot": 99})
    with pytest.raises(HardwareError, match="no return"):
        drv.accept_return("C0000001")
    with pytest.raises(HardwareError, match="slot"):
        drv.command(Cmd.DISPENSE, {"slot": "1"})
    sim.ctl.open_door(key=True)
    with pytest.raises(HardwareError, match="is open"):
        drv.lock_service_door()
    sim.ctl.close_door()
    assert drv.online
    after = sim.state()
    assert (after["slots"], after["bin"], after["dispenses"]) == \
        (before["slots"], before["bin"], before["dispenses"])
    with pytest.raises(ControlError, match="open the service door first"):
        sim.ctl.load(2, "C0000009")
    with pytest.raises(ControlError, match="already inside"):
        sim.ctl.insert_return("C0000001", timeout=1)


# -- recovery: the same driver object comes back by itself --------------------------

class LinkLog:
    """on_link for a driver: records the ups and downs."""

    def __init__(self) -> None:
        self.changes: list[bool] = []

    def __call__(self, online: bool) -> None:
        self.changes.append(online)


def test_power_cut_offline_at_once_then_back_by_itself(bench: Bench) -> None:
    sim = bench.sim(loaded={7: "C0000007"})
    link = LinkLog()
    drv, _ = bench.driver(sim, on_link=link, reconnect_interval=0.2)
    boot = drv.info["boot_id"]
    sim.kill()
    wait_until(lambda: not drv.online, 5.0, what="driver offline")
    started = time.monotonic()
    assert drv.dispense(7, timeout=10).result == "offline"
    assert time.monotonic() - started < 1.0  # the reader is told at once, not after a hang
    again = bench.sim()
    assert again.ctl.state()["slots"]["7"] == "C0000007"  # the books survived the power cut
    wait_until(lambda: drv.online, 10.0, what="driver back online by itself")
    assert drv.info["boot_id"] != boot and drv.info["serial"] == again.ctl.state()["serial"]
    assert drv.slot_scan()[7] == "C0000007"
    wait_until(lambda: link.changes == [True, False, True], what="link up, down, up")


def test_controller_reboot_is_followed_by_a_new_handshake(bench: Bench) -> None:
    sim = bench.sim(loaded={1: "C0000001"})
    link = LinkLog()
    drv, events = bench.driver(sim, on_link=link)
    boot = drv.info["boot_id"]
    sim.ctl.reboot()
    wait_until(lambda: drv.online and drv.info["boot_id"] != boot, 5.0, what="re-handshake")
    assert drv.info["boot_id"] == sim.ctl.state()["boot_id"]
    assert events.of(Cmd.POWER_UP) == [{"boot_id": drv.info["boot_id"]}]
    assert link.changes == [True, False, True]
    assert drv.slot_scan()[1] == "C0000001"


def test_a_reboot_whose_power_up_was_lost_is_found_by_the_heartbeat(bench: Bench) -> None:
    sim = bench.sim()
    drv, _ = bench.driver(sim, heartbeat_interval=0.5, reconnect_interval=0.2)
    boot = drv.info["boot_id"]
    sim.ctl.line(connected=False)
    sim.ctl.reboot()  # its POWER_UP goes nowhere
    time.sleep(0.3)  # shorter than the heartbeat: the host noticed nothing yet
    sim.ctl.line(connected=True)
    wait_until(lambda: drv.online and drv.info["boot_id"] != boot, 10.0,
               what="new boot found by the heartbeat")
    assert drv.info["boot_id"] == sim.ctl.state()["boot_id"]


def test_cable_pulled_and_put_back(bench: Bench) -> None:
    sim = bench.sim()
    drv, _ = bench.driver(sim, heartbeat_interval=0.5, reconnect_interval=0.2)
    sim.ctl.line(connected=False)
    wait_until(lambda: not drv.online, 5.0, what="silence noticed by the heartbeat")
    assert "no ACK" in drv.problem or "no STATUS_REPLY" in drv.problem or drv.problem
    sim.ctl.line(connected=True)
    wait_until(lambda: drv.online, 10.0, what="driver online once the cable is back")
    drv.display("Сәлем!")
    assert sim.ctl.state()["display"] == "Сәлем!"


def test_another_controller_on_the_port_is_refused(bench: Bench) -> None:
    sim = bench.sim()
    seen: list[str] = []

    def only_ks_1(info: dict[str, Any]) -> str | None:
        seen.append(info["serial"])
        return None if info["serial"] == "KS-1" else f"not this machine's ({info['serial']})"

    drv = MachineDriver(str(bench.link), on_event=Events(), check_identity=only_ks_1,
                        reconnect_interval=0.2)
    bench.drivers.append(drv)
    drv.start()
    wait_until(lambda: len(seen) >= 2, 5.0, what="two handshakes refused")
    assert not drv.online
    assert "not this machine's" in drv.problem
    assert drv.dispense(1, timeout=2).result == "offline"
    assert sim.ctl.state()["handled"].get("DISPENSE") is None


def test_book_in_the_door_at_power_cut_goes_back_to_its_slot(bench: Bench) -> None:
    sim = bench.sim("--take-timeout", "30", loaded={5: "C0000005"})
    drv, events = bench.driver(sim, reconnect_interval=0.2)
    drv.command(Cmd.DISPENSE, {"slot": 5, "intent": "i-5"})
    events.wait(Cmd.ITEM_DISPENSED)
    assert sim.state()["delivery"] == {"slot": 5, "tag": "C0000005", "intent": "i-5"}
    sim.kill()
    again = bench.sim()
    state = again.ctl.state()
    assert state["slots"]["5"] == "C0000005" and state["delivery"] is None
    assert state["dispenses"][-1] == {"intent": "i-5", "slot": 5, "tag": "C0000005",
                                      "outcome": "retracted"}
    assert events.wait(Cmd.ITEM_RETRACTED, timeout=10) == {"slot": 5, "tag": "C0000005",
                                                            "intent": "i-5"}


def test_faults_from_a_config_file(bench: Bench) -> None:
    config = bench.dir / "faults.json"
    config.write_text(json.dumps({"jam_rate": 1.0, "empty_slots": [2], "seed": 4,
                                  "auto_take": 0.2}))
    sim = bench.sim("--config", str(config), loaded={1: "C0000001", 2: "C0000002"})
    drv, _ = bench.driver(sim)
    assert drv.slot_scan()[2] is None  # emptied at boot, unannounced
    assert drv.dispense(1, timeout=5).result == "jam"
    assert drv.dispense(1, timeout=5).result == "jam"
    assert sim.state()["slots"]["1"] == "C0000001"


def test_sigterm_stops_the_sim_cleanly(bench: Bench) -> None:
    sim = bench.sim()
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.proc.wait(timeout=5) == 0
    assert not os.path.exists(sim.control)
    assert not os.path.lexists(bench.link)  # its symlink goes with it


class Peer:
    """One end of the line played by hand, to check link rules byte by byte."""

    def __init__(self, read: Callable[[], bytes], write: Callable[[bytes], Any]) -> None:
        self.read = read
        self.write = write
        self.dec = Decoder()

    @classmethod
    def host(cls, port: str) -> tuple[Peer, serial.SerialBase]:
        ser = serial.serial_for_url(port, timeout=0.05)
        return cls(lambda: bytes(ser.read(ser.in_waiting or 1)), ser.write), ser

    def send(self, seq: int, cmd: int, payload: dict[str, Any] | bytes | None = None) -> None:
        self.write(encode(seq, cmd, payload))

    def next(self, timeout: float = 3.0) -> Frame | BadFrame:
        """The next frame from the other side (POWER_UPs skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.dec.next_frame()
            if item is NEED_DATA:
                self.dec.feed(self.read())
                continue
            assert isinstance(item, Frame | BadFrame)
            if isinstance(item, Frame) and item.cmd == Cmd.POWER_UP:
                continue
            return item
        raise AssertionError("no frame from the other side")

    def expect(self, cmd: Cmd, seq: int | None = None) -> Frame:
        item = self.next()
        assert isinstance(item, Frame), item
        assert item.cmd == cmd, (Cmd(item.cmd).name, item.payload)
        if seq is not None:
            assert item.seq == seq
        return item


def test_link_rules_on_the_wire(bench: Bench) -> None:
    sim = bench.sim()
    raw, ser = Peer.host(sim.port)
    try:
        raw.send(0, Cmd.HELLO, {"proto": 1})
        raw.expect(Cmd.ACK, 0)
        reply = raw.expect(Cmd.HELLO_REPLY)
        raw.send(reply.seq, Cmd.ACK)
        # A duplicate is ACKed again but not handled: no second scan result.
        raw.send(1, Cmd.SLOT_SCAN)
        raw.expect(Cmd.ACK, 1)
        scan = raw.expect(Cmd.SLOT_SCAN_RESULT)
        raw.send(scan.seq, Cmd.ACK)
        raw.send(1, Cmd.SLOT_SCAN)
        raw.expect(Cmd.ACK, 1)
        raw.send(2, Cmd.STATUS)
        raw.expect(Cmd.ACK, 2)
        status = raw.expect(Cmd.STATUS_REPLY)
        raw.send(status.seq, Cmd.ACK)
        # Garbage gets a bare NAK; a bad payload a NAK with its seq and a reason.
        raw.write(b"\x7e\x00\x02\x05\x03{}\x00\x00")
        nak = raw.expect(Cmd.NAK, 0)
        assert nak.payload == b""
        raw.send(3, Cmd.DISPENSE, b"not json")
        nak = raw.expect(Cmd.NAK, 3)
        assert "not a JSON object" in nak.json()["reason"]
        raw.send(4, Cmd.HELLO, {"proto": 2})
        assert "not supported" in raw.expect(Cmd.NAK, 4).json()["reason"]
        # An event not ACKed is sent again with the same seq; a bare NAK resends at once.
        sim.ctl.present_card("R0001")
        first = raw.expect(Cmd.CARD_PRESENTED)
        again = raw.expect(Cmd.CARD_PRESENTED)
        assert again.seq == first.seq
        raw.send(0, Cmd.NAK)
        assert raw.expect(Cmd.CARD_PRESENTED).seq == first.seq
        raw.send(first.seq, Cmd.ACK)
        raw.send(5, Cmd.STATUS)
        raw.expect(Cmd.ACK, 5)
        raw.expect(Cmd.STATUS_REPLY)  # and no more CARD_PRESENTED in between
    finally:
        ser.close()


def test_driver_link_rules_against_a_hand_played_controller(bench: Bench) -> None:
    line = PtyPort()
    ctl = Peer(lambda: line.read(0.05), line.write)
    events = Events()
    drv = MachineDriver(line.name, on_event=events)
    bench.drivers.append(drv)
    try:
        drv.start()
        hello = ctl.expect(Cmd.HELLO)
        ctl.send(hello.seq, Cmd.ACK)
        ctl.send(10, Cmd.HELLO_REPLY, {"proto": 1, "fw": "hand", "slots": 3, "boot_id": "a",
                                      "serial": "KS-HAND"})
        ctl.expect(Cmd.ACK, 10)
        wait_until(lambda: drv.online, what="driver online")
        # A duplicate event is ACKed again and not dispatched again.
        ctl.send(11, Cmd.CARD_PRESENTED, {"card": "R1"})
        ctl.expect(Cmd.ACK, 11)
        ctl.send(11, Cmd.CARD_PRESENTED, {"card": "R1"})
        ctl.expect(Cmd.ACK, 11)
        ctl.send(12, Cmd.CARD_PRESENTED, {"card": "Қ2"})
        ctl.expect(Cmd.ACK, 12)
        wait_until(lambda: len(events.frames) >= 2, what="two cards")
        assert [f.json()["card"] for f in events.frames] == ["R1", "Қ2"]
        # Garbage: bare NAK. A bad event or a host command: NAK with seq and reason.
        ctl.write(b"\x7e\x00\x00\x01\x50\x00\x00")
        assert ctl.expect(Cmd.NAK, 0).payload == b""
        ctl.send(13, Cmd.CARD_PRESENTED, {"kard": "R3"})
        assert "card" in ctl.expect(Cmd.NAK, 13).json()["reason"]
        ctl.send(14, Cmd.DISPENSE, {"slot": 1})
        assert "not a controller event" in ctl.expect(Cmd.NAK, 14).json()["reason"]
        with ThreadPoolExecutor(1) as pool:
            # Not ACKed: sent again with the same seq; a bare NAK: sent again at once.
            done = pool.submit(drv.command, Cmd.DISPLAY, {"text": "Сәлем"})
            first = ctl.expect(Cmd.DISPLAY)
            assert ctl.expect(Cmd.DISPLAY).seq == first.seq
            ctl.send(0, Cmd.NAK)
            assert ctl.expect(Cmd.DISPLAY).seq == first.seq
            ctl.send(first.seq, Cmd.ACK)
            done.result(timeout=5)
            # A NAK with a reason is a refusal.
            done = pool.submit(drv.command, Cmd.DISPLAY, {"text": "x"})
            frame = ctl.expect(Cmd.DISPLAY)
            ctl.send(frame.seq, Cmd.NAK, {"reason": "display broken"})
            with pytest.raises(HardwareError, match="display broken"):
                done.result(timeout=5)
            # A reboot (new boot id) makes the driver handshake again.
            ctl.send(0, Cmd.POWER_UP, {"boot_id": "b"})
            ctl.expect(Cmd.ACK, 0)
            hello = ctl.expect(Cmd.HELLO)
            ctl.send(hello.seq, Cmd.ACK)
            ctl.send(1, Cmd.HELLO_REPLY, {"proto": 1, "fw": "hand", "slots": 3, "boot_id": "b",
                                     "serial": "KS-HAND"})
            ctl.expect(Cmd.ACK, 1)
            wait_until(lambda: drv.online and drv.info["boot_id"] == "b", what="re-handshake")
            # No ACK at all: 1 + RETRIES tries, then the link is down.
            done = pool.submit(drv.command, Cmd.DISPLAY, {"text": "y"})
            tries = [ctl.expect(Cmd.DISPLAY).seq for _ in range(1 + drv.retries)]
            assert len(set(tries)) == 1
            with pytest.raises(HardwareError, match="no ACK"):
                done.result(timeout=5)
            assert not drv.online
    finally:
        drv.stop()
        line.close()


# -- the controller alone, sans-IO: what the line cannot easily show -----------

def frames_out(ctl: Controller) -> list[Frame]:
    dec = Decoder()
    dec.feed(ctl.data_to_send())
    out: list[Frame] = []
    while isinstance(item := dec.next_frame(), Frame):
        out.append(item)
    return out


def test_controller_link_down_keeps_facts_and_drops_the_rest(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(json.dumps({"slots": {"1": "C1", "2": None, "3": None}}))
    ctl = Controller(tmp_path / "m.json", slots=3)
    ctl.tick(0.0)
    assert [Cmd(f.cmd) for f in frames_out(ctl)] == [Cmd.POWER_UP]
    ctl.receive(encode(0, Cmd.HELLO, {"proto": 1}), 0.1)
    assert [Cmd(f.cmd) for f in frames_out(ctl)] == [Cmd.ACK, Cmd.HELLO_REPLY]
    ctl.receive(encode(1, Cmd.DISPENSE, {"slot": 1}), 0.2)  # HELLO_REPLY is never ACKed
    assert [Cmd(f.cmd) for f in frames_out(ctl)] == [Cmd.ACK]
    t = 0.2
    while ctl.link_up:
        t += 0.05
        ctl.tick(t)
        assert t < 5, "link never declared down"
    assert ctl.snapshot()["pending_events"] == ["ITEM_DISPENSED"]
    frames_out(ctl)
    ctl.present_card("R1", t)
    rid = ctl.insert_return("C9", t)
    assert ctl.returns[rid]["outcome"] == "no_answer"
    assert ctl.snapshot()["pending_events"] == ["ITEM_DISPENSED"]
    [fact] = frames_out(ctl)  # the fact goes out; the card and the chute read do not
    assert fact.cmd == Cmd.ITEM_DISPENSED
    ctl.tick(t + 0.5)
    assert frames_out(ctl) == []  # no ACK-rate retransmits while down...
    ctl.tick(t + 1.1)
    [probe] = frames_out(ctl)  # ...but one probe a second
    assert (probe.cmd, probe.seq) == (Cmd.ITEM_DISPENSED, fact.seq)
    ctl.receive(encode(probe.seq, Cmd.ACK), t + 1.2)  # the host is back
    assert ctl.link_up
    assert ctl.snapshot()["pending_events"] == []
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["delivery"] == {"slot": 1, "tag": "C1", "intent": None}


class TcpCable:
    """A serial cable as a TCP port both ends dial, the way a serial-to-TCP server
    (ser2net) stands between a controller and its host: it takes two connections,
    pipes bytes between them, and ``pull`` cuts both (they dial again by themselves)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.pulls = 0
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-cable", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ends: list[socket.socket] = []
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            ends.append(conn)
            if len(ends) == 2:
                self._pipe(*ends)
                for end in ends:
                    end.close()
                ends = []
                self._cut.clear()
        for end in ends:
            end.close()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        while not (self._stop.is_set() or self._cut.is_set()):
            readable, _, _ = select.select([a, b], [], [], 0.05)
            for end in readable:
                try:
                    data = end.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                (b if end is a else a).sendall(data)

    def pull(self) -> None:
        """Pull the cable out and put it back: both connections are cut."""
        self.pulls += 1
        self._cut.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.server.close()


def test_the_driver_and_the_simulator_over_a_socket_url(bench: Bench) -> None:
    """Neither end needs a pty: both take any pyserial URL, here ``socket://``."""
    cable = TcpCable()
    try:
        sim = bench.sim("--auto-take", "0.2", "--port", cable.url, loaded={3: "C0000123"})
        assert sim.port == cable.url
        link = LinkLog()
        drv, events = bench.driver(sim, port=cable.url, on_link=link, reconnect_interval=0.2,
                                   heartbeat_interval=0.5)
        assert drv.info["serial"] == sim.ctl.state()["serial"]
        outcome = drv.dispense(3, intent="i-tcp", timeout=10)
        assert (outcome.result, outcome.tag) == ("taken", "C0000123")
        assert events.wait(Cmd.ITEM_DISPENSED)["intent"] == "i-tcp"
        cable.pull()
        wait_until(lambda: link.changes[-1:] == [False], 5.0, what="the driver offline")
        wait_until(lambda: drv.online, 15.0, what="both ends dialled again")
        assert link.changes == [True, False, True]
        assert drv.slot_scan()[3] is None and drv.status()["delivery"] is None
        assert sim.state()["dispenses"] == [{"intent": "i-tcp", "slot": 3, "tag": "C0000123",
                                              "outcome": "taken"}]
    finally:
        cable.close()
