"""The simulator without a line or a process: its state file at every step, its faults, its line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.controller import UNLOCK_SECONDS, Controller, ControllerError
from firmware_sim.faults import HANG_STEPS, FaultConfig, Hang, NoisyLine
from firmware_sim.state import load_state
from protocol.frames import Cmd, Decoder, Frame, encode

ROOT = Path(__file__).resolve().parent.parent


class Host:
    """Plays the host against a Controller, sans-IO: sends commands, ACKs what comes back."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl, self.seq, self.t = ctl, 0, 0.0
        self.seen: list[Frame] = []
        self.send(Cmd.HELLO, {"proto": 1})

    def send(self, cmd: Cmd, payload: dict[str, Any] | None = None) -> list[Frame]:
        self.seq = (self.seq + 1) % 256
        self.t += 0.01
        self.ctl.receive(encode(self.seq, cmd, payload), self.t)
        return self.pump()

    def pump(self, dt: float = 0.01) -> list[Frame]:
        """Advance time, take the controller's frames, ACK its events."""
        if self.ctl.hung_on_wire:  # the runner stops dead there
            return []
        self.t += dt
        self.ctl.tick(self.t)
        dec = Decoder()
        dec.feed(self.ctl.data_to_send())
        out = []
        while isinstance(item := dec.next_frame(), Frame):
            out.append(item)
            if item.cmd not in (Cmd.ACK, Cmd.NAK):
                self.ctl.receive(encode(item.seq, Cmd.ACK), self.t)
        self.seen += out
        return out


def machine(tmp_path: Path, **kw: Any) -> tuple[Controller, Host, Path]:
    path = tmp_path / "m.json"
    if not path.exists():
        path.write_text(json.dumps({"slots": {"1": "C1", "2": "C2", "3": None}, "bin": [],
                                    "bin_capacity": 2}))
    ctl = Controller(path, slots=3, **kw)
    return ctl, Host(ctl), path


def saved(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


# What the state file holds when the power is cut at each step of a dispense, and
# what the machine looks like once the power is back.
AT_STEP = {
    "dispense_received": ({"1": "C1"}, None, "C1"),
    "book_in_door": ({"1": None}, {"slot": 1, "tag": "C1", "intent": "i"}, "C1"),
    "dispensed_sent": ({"1": None}, {"slot": 1, "tag": "C1", "intent": "i"}, "C1"),
    "book_taken": ({"1": None}, None, None),
    "taken_sent": ({"1": None}, None, None),
}


@pytest.mark.parametrize("step", sorted(AT_STEP))
def test_a_power_cut_at_each_step_leaves_a_consistent_machine(tmp_path: Path, step: str) -> None:
    ctl, host, path = machine(tmp_path, faults=FaultConfig(hang_at=step), auto_take=0.0)
    try:
        host.send(Cmd.DISPENSE, {"slot": 1, "intent": "i"})
        for _ in range(5):
            host.pump()
            assert ctl.hung_on_wire is None or ctl.hung_on_wire == step
            if ctl.hung_on_wire:
                break
        else:
            pytest.fail(f"never reached {step}")
    except Hang as hang:
        assert hang.step == step
    slots, delivery, after = AT_STEP[step]
    doc = saved(path)
    assert {k: doc["slots"][k] for k in slots} == slots and doc["delivery"] == delivery
    again = Controller(path, slots=3)  # the power comes back
    assert again.state.slots[1] == after and again.state.delivery is None
    outcome = {d["intent"]: d["outcome"] for d in again.state.dispenses}.get("i")
    assert outcome == {"C1": "retracted" if delivery else None, None: "taken"}[after]


def test_every_step_is_known_and_documented() -> None:
    doc = (ROOT / "docs" / "serial-protocol.md").read_text()
    for step in HANG_STEPS:
        assert f"`{step}`" in doc
    with pytest.raises(ValueError, match="unknown step"):
        FaultConfig(hang_at="somewhere")


def test_a_jammed_or_empty_dispense_is_logged_with_its_intent(tmp_path: Path) -> None:
    ctl, host, path = machine(tmp_path)
    ctl.arm_fault("jam", host.t)
    host.send(Cmd.DISPENSE, {"slot": 2, "intent": "a"})
    host.send(Cmd.DISPENSE, {"slot": 3, "intent": "b"})
    assert [(d["intent"], d["outcome"]) for d in saved(path)["dispenses"]] == \
        [("a", "jam"), ("b", "empty")]
    naks = [f for f in host.send(Cmd.DISPENSE, {"slot": 2, "intent": "a"}) if f.cmd == Cmd.NAK]
    assert "already carried out (jam)" in naks[0].json()["reason"]
    assert saved(path)["slots"]["2"] == "C2"


def test_the_bin_fills_closes_the_chute_and_only_emptying_opens_it(tmp_path: Path) -> None:
    ctl, host, path = machine(tmp_path)
    for tag in ("C8", "C9"):
        ctl.insert_return(tag, host.t)
        host.pump()
        host.send(Cmd.ACCEPT_RETURN, {"tag": tag, "intent": f"r-{tag}"})
    assert [f.json() for f in host.seen if f.cmd == Cmd.BIN_FULL] == \
        [{"bin": 2, "bin_capacity": 2}]
    assert saved(path)["chute_open"] is False
    rid = ctl.insert_return("C7", host.t)
    assert ctl.returns[rid] == {"outcome": "refused", "tag": "C7",
                                "reason": "the return bin is full"}
    nak = [f for f in host.send(Cmd.CHUTE_OPEN) if f.cmd == Cmd.NAK][0]
    assert nak.json()["reason"] == "the return bin is full"
    with pytest.raises(ControllerError, match="open the service door"):
        ctl.empty_bin()
    ctl.open_door(host.t, key=True)
    assert ctl.empty_bin() == ["C8", "C9"]
    ctl.close_door(host.t)
    assert [f for f in host.send(Cmd.CHUTE_OPEN) if f.cmd == Cmd.ACK]
    assert saved(path)["chute_open"] is True and saved(path)["bin"] == []
    assert [r["intent"] for r in saved(path)["returns"]] == ["r-C8", "r-C9"]


def test_an_unlocked_door_locks_again_if_nobody_opens_it(tmp_path: Path) -> None:
    ctl, host, _ = machine(tmp_path)
    host.send(Cmd.SERVICE_UNLOCK)
    assert ctl.status()["locked"] is False
    host.pump(UNLOCK_SECONDS + 1)
    assert ctl.status()["locked"] is True
    with pytest.raises(ControllerError, match="locked"):
        ctl.open_door(host.t)


def test_a_reboot_keeps_the_physical_state_and_loses_the_ram(tmp_path: Path) -> None:
    ctl, host, path = machine(tmp_path)
    ctl.open_door(host.t, key=True)
    ctl.load(3, "C3")
    ctl.insert_return("C5", host.t)  # a book waiting in the chute: RAM only
    again = Controller(path, slots=3)
    assert again.state.slots == {1: "C1", 2: "C2", 3: "C3"} and again.state.door_open
    assert again.status()["chute_tag"] is None and again.boot_id != ctl.boot_id
    assert again.state.serial == ctl.state.serial


def test_an_old_state_file_is_read_and_given_a_serial(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"slots": {"1": "C1"}, "bin": ["C9"], "bin_capacity": 5}))
    st = load_state(path, 1)
    assert (st.slots, st.bin, st.bin_capacity, st.door_open) == ({1: "C1"}, ["C9"], 5, False)
    assert st.serial.startswith("KS-")


class FakePort:
    name = "fake"

    def __init__(self) -> None:
        self.written = b""

    def read(self, timeout: float) -> bytes:
        return b"\x00" * 1000

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        pass


def test_the_noisy_line_is_seeded_and_counts_what_it_did() -> None:
    data = bytes(range(256)) * 40
    runs = []
    for _ in range(2):
        port = FakePort()
        line = NoisyLine(port, FaultConfig(noise=0.01, drop=0.01, dup=0.01, seed=5))
        line.write(data)
        runs.append((port.written, dict(line.counts)))
    assert runs[0] == runs[1]  # the same seed, the same damage
    written, counts = runs[0]
    assert written != data and all(counts[k] > 50 for k in ("corrupted", "dropped", "duplicated"))
    assert len(written) == len(data) - counts["dropped"] + counts["duplicated"]
    clean = NoisyLine(FakePort(), FaultConfig())
    assert clean.read(0.1) == b"\x00" * 1000
    clean.set(connected=False)
    assert clean.read(0.1) == b"" and clean.counts["unplugged"] == 1000
    with pytest.raises(ValueError, match="between 0 and 1"):
        clean.set(noise=2.0)


def test_a_config_file_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"jam_rat": 0.5}))
    proc = subprocess.run([sys.executable, "-m", "firmware_sim", "--state", str(tmp_path / "s"),
                           "--control", str(tmp_path / "c.sock"), "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert proc.returncode == 2 and "jam_rat" in proc.stderr
