"""MachineDriver against the firmware simulator as a real process on a real pty."""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import serial

from edge.hardware import HardwareError, MachineDriver
from firmware_sim.control import ControlClient, ControlError
from firmware_sim.controller import Controller
from firmware_sim.runner import PtyPort
from protocol.frames import NEED_DATA, BadFrame, Cmd, Decoder, Frame, encode

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 10.0


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll ``predicate`` until truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


class Sim:
    """One firmware-sim process on a new pty."""

    def __init__(self, workdir: Path, state: Path, *args: str, slots: int = 10) -> None:
        n = len(list(workdir.glob("ctl-*")))
        self.control = str(workdir / f"ctl-{n}.sock")
        self.state_path = state
        self.log = workdir / f"sim-{n}.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "firmware_sim", "--state", str(state), "--slots",
                 str(slots), "--control", self.control, "-v", *args],
                stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("PTY "):
            self.kill()
            raise AssertionError(f"no PTY line from the simulator: {line!r}\n"
                                 + self.log.read_text())
        self.port = line.split()[1]
        self.ctl = ControlClient(self.control)

    def state(self) -> dict[str, Any]:
        """The state file as the simulator last wrote it."""
        return dict(json.loads(self.state_path.read_text()))

    def kill(self) -> None:
        """SIGKILL, as a power cut."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


class Events:
    """on_event for a driver: records frames."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.lock = threading.Lock()

    def __call__(self, frame: Frame) -> None:
        with self.lock:
            self.frames.append(frame)

    def wait(self, cmd: Cmd, timeout: float = 5.0) -> dict[str, Any]:
        """The payload of the first ``cmd`` event, waiting for it."""
        def find() -> dict[str, Any] | None:
            with self.lock:
                return next((f.json() for f in self.frames if f.cmd == cmd), None)
        return dict(wait_until(find, timeout, what=cmd.name))


class Bench:
    """A test's simulators and drivers, all stopped at teardown."""

    def __init__(self) -> None:
        # Unix socket paths must stay under 108 bytes: pytest's tmp_path can be longer.
        self.dir = Path(tempfile.mkdtemp(prefix="ks-", dir="/tmp"))
        self.state = self.dir / "machine.json"
        self.sims: list[Sim] = []
        self.drivers: list[MachineDriver] = []

    def sim(self, *args: str, slots: int = 10) -> Sim:
        sim = Sim(self.dir, self.state, *args, slots=slots)
        self.sims.append(sim)
        return sim

    def driver(self, sim: Sim) -> tuple[MachineDriver, Events]:
        events = Events()
        drv = MachineDriver(sim.port, on_event=events)
        self.drivers.append(drv)
        drv.start()
        wait_until(lambda: drv.online, 5.0, what="driver online")
        return drv, events

    def close(self) -> None:
        for drv in self.drivers:
            drv.stop()
        for sim in self.sims:
            sim.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {s.log.name}\n{s.log.read_text()[-6000:]}" for s in self.sims)


@pytest.fixture
def bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    b = Bench()
    yield b
    b.close()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(b.logs())
    shutil.rmtree(b.dir, ignore_errors=True)


def test_handshake_goes_online(bench: Bench) -> None:
    sim = bench.sim()
    drv, _ = bench.driver(sim)
    assert drv.info["slots"] == 10
    assert drv.info["boot_id"] == sim.ctl.state()["boot_id"]
    status = drv.request(Cmd.STATUS, None, Cmd.STATUS_REPLY, 2.0).json()
    assert status["slots"] == {str(n): None for n in range(1, 11)}


def test_dispense_taken(bench: Bench) -> None:
    sim = bench.sim("--auto-take", "0.2")
    drv, events = bench.driver(sim)
    sim.ctl.load(3, "C0000123")
    assert sim.state()["slots"]["3"] == "C0000123"
    outcome = drv.dispense(3, timeout=10)
    assert (outcome.result, outcome.slot, outcome.tag) == ("taken", 3, "C0000123")
    assert sim.state()["slots"]["3"] is None
    assert sim.state()["delivery"] is None
    assert events.wait(Cmd.ITEM_DISPENSED) == {"slot": 3, "tag": "C0000123"}


def test_dispense_empty_slot(bench: Bench) -> None:
    sim = bench.sim("--auto-take", "0.2")
    drv, _ = bench.driver(sim)
    outcome = drv.dispense(5, timeout=10)
    assert (outcome.result, outcome.slot, outcome.tag) == ("empty", 5, None)


def test_jam_keeps_the_book_in_its_slot(bench: Bench) -> None:
    sim = bench.sim("--auto-take", "0.2")
    drv, _ = bench.driver(sim)
    sim.ctl.load(2, "C0000002")
    sim.ctl.fault("jam")
    assert drv.dispense(2, timeout=10).result == "jam"
    assert sim.state()["slots"]["2"] == "C0000002"
    # The fault was for one dispense only.
    assert drv.dispense(2, timeout=10).result == "taken"


def test_not_taken_goes_back_then_taken_by_hand(bench: Bench) -> None:
    sim = bench.sim("--take-timeout", "1")
    drv, _ = bench.driver(sim)
    sim.ctl.load(4, "C0000004")
    outcome = drv.dispense(4, timeout=10)
    assert (outcome.result, outcome.tag) == ("not_taken", "C0000004")
    assert sim.state()["slots"]["4"] == "C0000004"
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(drv.dispense, 4, timeout=10)
        wait_until(lambda: sim.ctl.state()["delivery"], what="book in the door")
        assert sim.ctl.take_item() == "C0000004"
        assert pending.result(timeout=10).result == "taken"
    assert sim.state()["slots"]["4"] is None


def test_card_presented_reaches_on_event(bench: Bench) -> None:
    sim = bench.sim()
    _, events = bench.driver(sim)
    sim.ctl.present_card("R0042")
    assert events.wait(Cmd.CARD_PRESENTED) == {"card": "R0042"}


@pytest.mark.parametrize("decision", ["accept", "reject"])
def test_return_decided_by_the_host(bench: Bench, decision: str) -> None:
    sim = bench.sim()
    drv, events = bench.driver(sim)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sim.ctl.insert_return, "C0000777", timeout=10)
        assert events.wait(Cmd.RETURN_ITEM_READ) == {"tag": "C0000777"}
        if decision == "accept":
            drv.accept_return("C0000777")
        else:
            drv.reject_return("C0000777", "not a book of this network")
        reply = pending.result(timeout=15)
    if decision == "accept":
        assert reply["outcome"] == "accepted"
        assert sim.state()["bin"] == ["C0000777"]
    else:
        assert (reply["outcome"], reply["reason"]) == ("rejected", "not a book of this network")
        assert sim.state()["bin"] == []


def test_refused_commands_change_nothing(bench: Bench) -> None:
    sim = bench.sim()
    drv, _ = bench.driver(sim)
    sim.ctl.load(1, "C0000001")
    before = sim.state()
    with pytest.raises(HardwareError, match="no slot 99"):
        drv.command(Cmd.DISPENSE, {"slot": 99})
    with pytest.raises(HardwareError, match="no return"):
        drv.accept_return("C0000001")
    with pytest.raises(HardwareError, match="reserved"):
        drv.command(Cmd.CHUTE_OPEN)
    with pytest.raises(HardwareError, match="slot"):
        drv.command(Cmd.DISPENSE, {"slot": "1"})
    assert drv.online
    assert sim.state() == before
    with pytest.raises(ControlError, match="already holds"):
        sim.ctl.load(1, "C0000009")
    with pytest.raises(ControlError, match="already inside"):
        sim.ctl.insert_return("C0000001", timeout=1)


def test_killed_sim_goes_offline_and_restart_keeps_the_books(bench: Bench) -> None:
    sim = bench.sim()
    drv, _ = bench.driver(sim)
    sim.ctl.load(7, "C0000007")
    sim.kill()
    wait_until(lambda: not drv.online, 5.0, what="driver offline")
    started = time.monotonic()
    outcome = drv.dispense(7, timeout=10)
    assert outcome.result == "offline"
    assert time.monotonic() - started < 2.0
    # The new pty may get the same /dev/pts number: the old driver must not grab it.
    drv.stop()
    again = bench.sim()
    assert again.ctl.state()["slots"]["7"] == "C0000007"
    drv2, _ = bench.driver(again)
    scan = drv2.request(Cmd.SLOT_SCAN, None, Cmd.SLOT_SCAN_RESULT, 2.0).json()
    assert scan["slots"]["7"] == "C0000007"


def test_book_in_the_door_at_power_cut_goes_back_to_its_slot(bench: Bench) -> None:
    sim = bench.sim("--take-timeout", "30")
    drv, events = bench.driver(sim)
    sim.ctl.load(5, "C0000005")
    drv.command(Cmd.DISPENSE, {"slot": 5})
    events.wait(Cmd.ITEM_DISPENSED)
    assert sim.state()["delivery"] == {"slot": 5, "tag": "C0000005"}
    sim.kill()
    drv.stop()
    again = bench.sim()
    state = again.ctl.state()
    assert state["slots"]["5"] == "C0000005"
    assert state["delivery"] is None
    _, events2 = bench.driver(again)
    assert events2.wait(Cmd.ITEM_RETRACTED) == {"slot": 5, "tag": "C0000005"}


def test_sigterm_stops_the_sim_cleanly(bench: Bench) -> None:
    sim = bench.sim()
    sim.proc.send_signal(signal.SIGTERM)
    assert sim.proc.wait(timeout=5) == 0
    assert not os.path.exists(sim.control)


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
        ctl.send(10, Cmd.HELLO_REPLY, {"proto": 1, "fw": "hand", "slots": 3, "boot_id": "a"})
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
            ctl.send(1, Cmd.HELLO_REPLY, {"proto": 1, "fw": "hand", "slots": 3, "boot_id": "b"})
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
    ctl = Controller(tmp_path / "m.json", slots=3)
    ctl.load(1, "C1")
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
    assert json.loads((tmp_path / "m.json").read_text())["delivery"] == {"slot": 1, "tag": "C1"}
