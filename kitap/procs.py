"""Starting and stopping the network's processes: our own Mosquitto, kitap processes.

Used by the demo and by the integration tests, which must be able to kill the
broker and start it again on the same port.
"""
from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str:
    """The mosquitto binary; RuntimeError with the fix if it is not installed."""
    for name in MOSQUITTO_CANDIDATES:
        path = shutil.which(name) or (name if os.access(name, os.X_OK) else None)
        if path:
            return path
    raise RuntimeError("mosquitto not found: run `make setup` (apt-get install mosquitto)")


def wait_for(predicate: Any, timeout: float, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` until it returns a truthy value; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the condition is not met yet
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}"
                       + (f" (last error: {last_exc})" if last_exc else ""))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True if something accepts TCP connections on ``port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class Mosquitto:
    """A broker of our own on a port of our own, that we may kill and restart."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "",
                 auth_dir: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.workdir / f"mosquitto-{self.port}.conf"
        self.log = self.workdir / f"mosquitto-{self.port}.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Our own broker runs as whoever started it, so it can read the
            # credentials we wrote with owner-only permissions.
            f"user {getpass.getuser()}\n"
            # The broker is a pipe, not a store: nothing persisted on purpose.
            "persistence false\n"
            "max_queued_messages 100000\n"
            + ((auth_dir / "mosquitto.conf").read_text() if auth_dir else "allow_anonymous true\n")
            + extra_conf
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start the broker and wait until it accepts connections."""
        logf = self.log.open("ab")
        self.proc = subprocess.Popen([find_mosquitto(), "-c", str(self.conf)],
                                     stdout=logf, stderr=subprocess.STDOUT)
        wait_for(lambda: port_open(self.port), timeout, what=f"mosquitto on {self.port}")
        return self

    def kill(self) -> None:
        """SIGKILL: the broker forgets everything it had queued."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        wait_for(lambda: not port_open(self.port), 5.0, what="broker port to close")

    def stop(self) -> None:
        """Stop the broker politely."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def kitap_command(*args: str) -> list[str]:
    """The command line that runs ``kitap ARGS`` with this interpreter."""
    return [sys.executable, "-m", "kitap", *args]


class Process:
    """A kitap process with its log in a file."""

    def __init__(self, name: str, argv: list[str], log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        """Start it (stdout and stderr to the log file)."""
        logf = self.log.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        return self

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP: the process holds its sockets open but reads nothing."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a power cut would."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=5)


def http_json(method: str, url: str, body: Any = None, timeout: float = 70.0,
              token: str | None = None) -> tuple[int, Any]:
    """A JSON request (with a bearer ``token`` if given); (status, body) for 2xx and 4xx."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url}")
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - our own URL
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, raw.decode("utf-8", "replace")


def wait_http(url: str, timeout: float = 20.0) -> None:
    """Wait until ``url`` answers 200."""
    wait_for(lambda: http_json("GET", url, timeout=1.0)[0] == 200, timeout, what=url)


def start_firmware_sim(name: str, workdir: Path, *, state: Path, slots: int, control: str,
                       auto_take: float | None = None, timeout: float = 15.0,
                       ) -> tuple[Process, str]:
    """Start ``kitap firmware-sim`` on a new pty; returns the process and the pty's path."""
    argv = ["firmware-sim", "--state", str(state), "--slots", str(slots), "--control", control]
    if auto_take is not None:
        argv += ["--auto-take", str(auto_take)]
    proc = Process(name, kitap_command(*argv), workdir / f"{name}.log").start()

    def pty_line() -> str | None:
        for line in proc.log.read_text(errors="replace").splitlines():
            if line.startswith("PTY "):
                return line.split(None, 1)[1].strip()
        if not proc.alive():
            raise RuntimeError(f"{name} exited: {proc.log.read_text()[-2000:]}")
        return None

    try:
        return proc, wait_for(pty_line, timeout, what=f"{name}'s pty")
    except Exception:
        proc.kill()
        raise
