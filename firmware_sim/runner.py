"""Runs a Controller on a serial line (a new pty, or any pyserial URL) with a control socket.

The line is served by one loop (read, feed, tick, write), through a
``NoisyLine`` that flips, drops and doubles bytes when told to. The control
socket (a Unix socket, one JSON object per line each way) lets a demo, a test
or a person act as the reader or the technician; see ``firmware_sim.control``.

A pty's path (``/dev/pts/N``) changes every time the simulator starts. With
``link`` the runner also keeps a symlink pointing at the current pty (replaced
atomically), the way udev keeps ``/dev/serial/by-id/...`` for a USB adapter:
a host configured with the symlink finds the controller again after a restart.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socketserver
import stat
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import serial

from firmware_sim.controller import RETURN_TIMEOUT, Controller, ControllerError
from firmware_sim.faults import HANG_STEPS, FaultConfig, Hang, NoisyLine, Port

logger = logging.getLogger(__name__)

# Timers (ACK 250 ms, take timeout in seconds) need no finer grain than 20 ms,
# and the loop stays idle-cheap.
TICK: Final = 0.02
# A pyserial URL that failed (a TCP peer gone) is tried again this often.
REOPEN_INTERVAL: Final = 1.0
# A host that stops reading must not stall the controller for long.
WRITE_TIMEOUT: Final = 1.0
# One request line; a longer one is a mistake, not a request.
MAX_REQUEST: Final = 64 * 1024
READ_CHUNK: Final = 4096


class PtyPort:
    """A new pseudo-terminal: we hold the master, the host opens ``name`` (the slave)."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        # Raw at once: until the host opens the slave, the default line discipline
        # would echo our own frames back to us and rewrite CR/LF bytes.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.name = os.ttyname(self._slave)
        # We keep the slave open too, so the master never sees a hang-up while the
        # host is away (a host reconnecting must find the same line).

    def read(self, timeout: float) -> bytes:
        """Bytes from the host, b"" if none came within ``timeout``."""
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self._master, READ_CHUNK)
        except BlockingIOError:
            return b""

    def write(self, data: bytes) -> None:
        """Send bytes; what does not fit in a full line buffer is lost, as on a UART."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                logger.debug("line buffer full (host not reading): %d bytes lost", len(view))
                return
            view = view[n:]

    def close(self) -> None:
        """Close both ends; the host's reads fail from now on."""
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class UrlPort:
    """Any pyserial URL or device path (``socket://``, ``/dev/ttyUSB0``, ``loop://``)."""

    def __init__(self, url: str) -> None:
        self.name = url
        self._ser = serial.serial_for_url(url, timeout=TICK, write_timeout=WRITE_TIMEOUT)

    def read(self, timeout: float) -> bytes:
        """Bytes from the host (the port's own timeout is TICK)."""
        return bytes(self._ser.read(self._ser.in_waiting or 1))

    def write(self, data: bytes) -> None:
        """Send bytes."""
        self._ser.write(data)

    def close(self) -> None:
        """Close the port."""
        self._ser.close()


class _ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    runner: Runner


class _ControlHandler(socketserver.StreamRequestHandler):
    server: _ControlServer

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_REQUEST)
            if not line:
                return
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("not an object")
            except ValueError:
                reply: dict[str, Any] = {"ok": False, "error": "request is not a JSON object"}
            else:
                reply = self.server.runner.op(req)
            self.wfile.write(json.dumps(reply, ensure_ascii=False).encode() + b"\n")
            if reply.get("power_cut"):
                self.server.runner.power_cut()


def _field(req: dict[str, Any], name: str, kind: type) -> Any:
    value = req.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ControllerError(f"field {name!r} missing or not {kind.__name__}")
    return value


class Runner:
    """The controller, its line and its control socket."""

    def __init__(self, factory: Callable[[], Controller], control_path: str,
                 port_url: str | None = None, *, faults: FaultConfig | None = None,
                 link: str | None = None) -> None:
        self._factory = factory
        self.controller = factory()
        self.control_path = control_path
        self.port_url = port_url
        self.link = link
        self.faults = faults or FaultConfig()
        self._port: NoisyLine | None = None
        self._cond = threading.Condition()  # guards the controller and the port
        self._stop = threading.Event()
        self._server: _ControlServer | None = None
        self._server_thread: threading.Thread | None = None

    def open(self) -> str:
        """Open the line and the control socket; returns the line to announce on stdout."""
        self._port = NoisyLine(self._open_port(), self.faults)
        path = Path(self.control_path)
        if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
            path.unlink()  # left by a killed run
        self._server = _ControlServer(self.control_path, _ControlHandler)
        self._server.runner = self
        self._server_thread = threading.Thread(target=self._server.serve_forever,
                                               name="control", daemon=True)
        self._server_thread.start()
        logger.info("line %s, control socket %s", self._port.name, self.control_path)
        return f"PORT {self._port.name}" if self.port_url else f"PTY {self._port.name}"

    def _open_port(self) -> Port:
        if self.port_url:
            return UrlPort(self.port_url)
        port = PtyPort()
        if self.link:
            tmp = f"{self.link}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(port.name, tmp)
            os.replace(tmp, self.link)
            logger.info("%s -> %s", self.link, port.name)
        return port

    def run(self, stop: threading.Event) -> None:
        """Serve the line until ``stop`` is set."""
        self._stop = stop
        while not stop.is_set():
            port = self._port
            if port is None:
                self._reopen(stop)
                continue
            try:
                data = port.read(TICK)
            except OSError as exc:
                self._lost(port, exc)
                continue
            with self._cond:
                now = time.monotonic()
                try:
                    if data:
                        self.controller.receive(data, now)
                    self.controller.tick(now)
                except Hang as hang:
                    self._hang(hang.step)
                self._flush()
                self._cond.notify_all()

    def close(self) -> None:
        """Stop the control socket, close the line, remove the symlink if it is ours."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with contextlib.suppress(OSError):
                os.unlink(self.control_path)
        with self._cond:
            if self._port is not None:
                if self.link and not self.port_url:
                    with contextlib.suppress(OSError):
                        if os.readlink(self.link) == self._port.name:
                            os.unlink(self.link)
                self._port.close()
                self._port = None

    # -- the line -------------------------------------------------------------

    def _flush(self) -> None:
        data = self.controller.data_to_send()
        port = self._port
        if data and port is not None:
            try:
                port.write(data)
            except OSError as exc:
                self._lost(port, exc)
        if self.controller.hung_on_wire:
            self._hang(self.controller.hung_on_wire)

    def _hang(self, step: str) -> None:
        """Stop dead at ``step`` (the lock held: nothing moves) until killed or stopped."""
        data = self.controller.data_to_send()
        if data and self._port is not None:
            with contextlib.suppress(OSError):
                self._port.write(data)
        logger.warning("HANG at %s: %s", step, HANG_STEPS.get(step, ""))
        while not self._stop.wait(0.1):
            pass
        raise ControllerError(f"stopped while hung at {step}")

    def _lost(self, port: NoisyLine, exc: Exception) -> None:
        logger.error("line %s failed: %s", port.name, exc)
        with contextlib.suppress(OSError):
            port.close()
        if self._port is port:
            self._port = None

    def _reopen(self, stop: threading.Event) -> None:
        if stop.wait(REOPEN_INTERVAL) or not self.port_url:
            if not self.port_url:  # a pty cannot come back; nothing to serve
                stop.set()
            return
        try:
            port = NoisyLine(UrlPort(self.port_url), self.faults)
        except OSError as exc:
            logger.debug("reopening %s: %s", self.port_url, exc)
            return
        with self._cond:
            self._port = port
        logger.info("line %s open again", port.name)

    # -- the control socket ---------------------------------------------------

    def op(self, req: dict[str, Any]) -> dict[str, Any]:
        """Carry out one control request; always answers a dict with "ok"."""
        name = req.get("op")
        try:
            if name == "insert_return":
                return self._insert_return(_field(req, "tag", str),
                                           float(req.get("timeout", RETURN_TIMEOUT)))
            with self._cond:
                reply: dict[str, Any] = {"ok": True}
                try:
                    reply.update(self._op(str(name), req, time.monotonic()) or {})
                except Hang as hang:
                    self._hang(hang.step)
                self._flush()
                self._cond.notify_all()
                return reply
        except (ControllerError, ValueError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}

    def _op(self, name: str, req: dict[str, Any], now: float) -> dict[str, Any] | None:
        ctl = self.controller
        if name == "present_card":
            ctl.present_card(_field(req, "card", str), now)
        elif name == "enter_pin":
            ctl.enter_pin(_field(req, "pin", str), now)
        elif name == "take_item":
            return {"tag": ctl.take_item(now)}
        elif name == "open_door":
            ctl.open_door(now, key=bool(req.get("key", False)))
        elif name == "close_door":
            ctl.close_door(now)
        elif name == "load":
            ctl.load(_field(req, "slot", int), _field(req, "tag", str))
        elif name == "remove":
            return {"tag": ctl.remove(_field(req, "slot", int))}
        elif name == "empty_bin":
            return {"books": ctl.empty_bin()}
        elif name == "fault":
            slot = req.get("slot")
            ctl.arm_fault(_field(req, "kind", str), now,
                          _field(req, "slot", int) if slot is not None else None)
        elif name == "reboot":
            self._reboot()
        elif name == "power_cut":  # the requester is answered first, then the power goes
            return {"power_cut": True, "pid": os.getpid()}
        elif name == "line":
            if self._port is None:
                raise ControllerError("the line is not open")
            self._port.set(**{k: req[k] for k in ("noise", "drop", "dup", "connected")
                              if k in req})
        elif name == "state":
            snap = ctl.snapshot()
            if self._port is not None:
                snap["line"] = {"connected": self._port.connected, **self._port.counts}
            return snap
        else:
            raise ControllerError(f"unknown op {name!r}")
        return None

    def power_cut(self) -> None:
        """Die at once, as the cabinet does when its power goes (SIGKILL: nothing tidied).

        Only what the controller had saved survives, as on real hardware; start the
        simulator again (same ``--state``, same ``--link``) to bring the power back.
        """
        logger.warning("POWER CUT (asked on the control socket)")
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def _reboot(self) -> None:
        """The controller restarts: RAM is lost (queued events, the chute), the file is kept."""
        logger.warning("controller reboot")
        self.controller = self._factory()

    def _insert_return(self, tag: str, timeout: float) -> dict[str, Any]:
        if not 0 < timeout <= 600:
            raise ControllerError("timeout must be in (0, 600] seconds")
        with self._cond:
            rid = self.controller.insert_return(tag, time.monotonic(), timeout)
            self._flush()
            # The controller's own chute timer ends the wait; the margin covers the tick.
            ctl = self.controller
            self._cond.wait_for(lambda: rid in ctl.returns or ctl is not self.controller,
                                timeout + 1.0)
            result = ctl.returns.get(rid)
        if result is None:
            return {"ok": False, "error": "no outcome (controller rebooted or loop not running?)"}
        return {"ok": True, **result}
