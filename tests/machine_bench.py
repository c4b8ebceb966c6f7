"""A bench for the machine tests: simulator processes on real ptys, drivers and nodes.

Every simulator runs as its own process (``python -m firmware_sim``) on a new
pty, with a stable symlink (``--link``) that survives its restarts, as
``/dev/serial/by-id/...`` does for a real adapter. Nodes run in this process
(``EdgeStore`` + ``MachineService`` on a real SQLite file) or as ``kitap edge``
processes (tests/test_crash_*.py). Nothing on the serial line is mocked.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.hardware import MachineDriver
from edge.machine import MachineService, Tunables
from edge.store import EdgeStore, Outbox, db
from firmware_sim.control import ControlClient
from protocol.frames import Cmd, Frame

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 10.0
# Fast timings for nodes under test: the behaviour is the same, the waits shorter.
FAST = Tunables(heartbeat=0.5, reconnect=0.2, controller_lost_after=2.0,
                door_open_limit=1.5, session_seconds=30.0, dispense_timeout=15.0)

TITLES = [{"id": "T001", "title": "Абай жолы", "item_type": "book"},
          {"id": "T002", "title": "Qan men ter", "item_type": "book"}]
READERS = [{"card": "R0001", "name": "Айгерим"}, {"card": "R0002", "name": "Нурлан"},
           {"card": "R0003", "name": "Dana"}]


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll ``predicate`` until truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def machine_state(slots: int, loaded: dict[int, str], **extra: Any) -> dict[str, Any]:
    """A state file's content: ``slots`` slots, ``loaded`` {slot: tag}."""
    doc: dict[str, Any] = {"slots": {str(n): loaded.get(n) for n in range(1, slots + 1)},
                           "bin": [], "bin_capacity": 40}
    doc.update(extra)
    return doc


class Sim:
    """One firmware-sim process on a new pty, reachable through ``link``."""

    def __init__(self, workdir: Path, state: Path, link: Path, *args: str, slots: int = 10,
                 wait_ready: bool = True) -> None:
        n = len(list(workdir.glob("sim-*.log")))
        self.control = str(workdir / f"ctl-{n}.sock")
        self.state_path = state
        self.link = str(link)
        self.log = workdir / f"sim-{n}.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "firmware_sim", "--state", str(state), "--slots",
                 str(slots), "--control", self.control, "--link", self.link, "-v", *args],
                stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.proc.stdout is not None
        self.port = ""
        if wait_ready:
            self.wait_ready()
        self.ctl = ControlClient(self.control)

    def wait_ready(self) -> None:
        """Wait for the "PTY ..." line (or "PORT URL" when the simulator serves a URL)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith(("PTY ", "PORT ")):
            self.kill()
            raise AssertionError(f"no PTY line from the simulator: {line!r}\n"
                                 + self.log.read_text())
        self.port = line.split()[1]

    def state(self) -> dict[str, Any]:
        """The state file as the simulator last wrote it."""
        return dict(json.loads(self.state_path.read_text()))

    def wait_log(self, text: str, timeout: float = 10.0) -> None:
        """Wait until the simulator's log says ``text``."""
        wait_until(lambda: text in self.log.read_text(errors="replace"), timeout, what=text)

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
    """on_event for a bare driver: records frames."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.lock = threading.Lock()

    def __call__(self, frame: Frame) -> None:
        with self.lock:
            self.frames.append(frame)

    def of(self, cmd: Cmd) -> list[dict[str, Any]]:
        """Payloads of the ``cmd`` events so far."""
        with self.lock:
            return [f.json() for f in self.frames if f.cmd == cmd]

    def wait(self, cmd: Cmd, timeout: float = 5.0) -> dict[str, Any]:
        """The payload of the first ``cmd`` event, waiting for it."""
        return dict(wait_until(lambda: next(iter(self.of(cmd)), None), timeout, what=cmd.name))


class Bench:
    """A test's simulators, drivers and nodes, all stopped at teardown."""

    def __init__(self) -> None:
        # Unix socket paths must stay under 108 bytes: pytest's tmp_path can be longer.
        self.dir = Path(tempfile.mkdtemp(prefix="ks-", dir="/tmp"))
        self.state = self.dir / "machine.json"
        self.link = self.dir / "machine.tty"
        self.sims: list[Sim] = []
        self.drivers: list[MachineDriver] = []
        self.machines: list[MachineService] = []
        self.apps: list[Any] = []
        self.store: EdgeStore | None = None

    def sim(self, *args: str, slots: int = 10, loaded: dict[int, str] | None = None,
            **state: Any) -> Sim:
        """Start a simulator (with a state file of ``loaded`` books, if given)."""
        if loaded is not None or state:
            self.state.write_text(json.dumps(machine_state(slots, loaded or {}, **state)))
        sim = Sim(self.dir, self.state, self.link, *args, slots=slots)
        self.sims.append(sim)
        return sim

    def driver(self, sim: Sim, port: str | None = None,
               **kwargs: Any) -> tuple[MachineDriver, Events]:
        """A bare driver on the sim's link (or on ``port``, a pyserial URL), online."""
        events = Events()
        drv = MachineDriver(port or str(self.link), on_event=events, **kwargs)
        self.drivers.append(drv)
        drv.start()
        wait_until(lambda: drv.online, 5.0, what="driver online")
        return drv, events

    def node(self, copies: dict[int, str], *, readers: list[dict[str, Any]] | None = None,
             tunables: Tunables = FAST, wait: bool = True) -> MachineService:
        """An edge store holding ``copies`` {slot: barcode} and a MachineService on the link."""
        if self.store is None:
            self.store = EdgeStore("m-test", str(self.dir / "edge.db"))
            self.store.seed(titles=TITLES, readers=readers or READERS,
                            copies=[{"barcode": b, "title_id": "T001", "slot": s}
                                    for s, b in copies.items()])
        faults: list[list[str]] = []
        m = MachineService(self.store, str(self.link), tunables=tunables,
                           on_faults=faults.append)
        m.fault_log = faults  # type: ignore[attr-defined]
        self.machines.append(m)
        m.start()
        if wait:
            wait_until(lambda: m.ready, 10.0, what="machine online and reconciled")
        return m

    def app(self, copies: dict[int, str], *, readers: list[dict[str, Any]] | None = None,
            **config: Any) -> Any:
        """A whole machine node as ``edge.app.create_app`` builds it (no MQTT unless
        ``config`` says so) on the sim's link, holding ``copies`` {slot: barcode}; online."""
        from edge.app import create_app

        path = str(self.dir / "edge.db")
        self.store = EdgeStore("m-test", path)
        self.store.seed(titles=TITLES, readers=readers or READERS,
                        copies=[{"barcode": b, "title_id": "T001", "slot": s}
                                for s, b in copies.items()])
        app = create_app({"NODE_ID": "m-test", "NODE_KIND": "machine", "DATABASE": path,
                          "SERIAL_PORT": str(self.link), "START_SYNC": False,
                          "SECRET_KEY": "test", "TESTING": True, **config})
        self.apps.append(app)
        machine = app.extensions["kitap.machine"]
        wait_until(lambda: machine.ready, 10.0, what="machine online and reconciled")
        return app

    def close(self) -> None:
        from edge.app import shutdown

        for app in self.apps:
            shutdown(app)
        for m in self.machines:
            m.stop()
        for drv in self.drivers:
            drv.stop()
        for sim in self.sims:
            sim.stop()
        if self.store is not None:
            db.close()

    def logs(self) -> str:
        return "\n".join(f"--- {s.log.name}\n{s.log.read_text()[-8000:]}" for s in self.sims)


def bench_for(request: pytest.FixtureRequest) -> Iterator[Bench]:
    """A Bench, torn down after the test; the simulators' logs are printed on failure.

    A test module makes it a fixture: ``bench = pytest.fixture(bench_for, name="bench")``.
    """
    b = Bench()
    yield b
    b.close()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(b.logs())
    shutil.rmtree(b.dir, ignore_errors=True)


def events_of(*types: str) -> list[tuple[str, dict[str, Any]]]:
    """The node's outbox events of ``types`` (all if none), oldest first: (type, body)."""
    rows = Outbox.select().order_by(Outbox.seq)
    out = [(r.type, json.loads(r.envelope)["body"]) for r in rows]
    return [e for e in out if not types or e[0] in types]


def present(m: MachineService, sim: Sim, card: str, pin: str | None = None) -> None:
    """Hold ``card`` to the reader (and type ``pin``), and wait until the node has it."""
    sim.ctl.present_card(card)
    wait_until(lambda: m.session is not None and m.session.card == card, 5.0,
               what=f"card {card} at the node")
    if pin is not None:
        sim.ctl.enter_pin(pin)
        wait_until(lambda: m.pin_ok(card), 5.0, what="PIN accepted")
