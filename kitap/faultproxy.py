"""A fault-injecting TCP proxy on loopback: a node's link to the broker, made to fail.

Modes, switched at any time from another thread:
    up      bytes flow both ways
    cut     every connection is closed and new ones are closed at once (link down)
    stall   connections stay open but no byte moves (a half-open link: TCP says
            nothing, only keepalives can tell)
and ``flap(period)`` alternates up and cut until told otherwise.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
from contextlib import suppress

logger = logging.getLogger(__name__)

# A pump looks at the mode this often; a stall or cut takes effect within it.
TICK = 0.05
CHUNK = 65536


class FaultProxy:
    """Listens on 127.0.0.1:``port`` and forwards to ``target_port``."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.mode = "up"
        self.counts = {"cut": 0, "stall": 0, "flap": 0}
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self._listener.getsockname()[1])
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flap_stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name=f"proxy-{self.port}").start()

    def set(self, mode: str) -> None:
        """Switch to "up", "cut" or "stall"."""
        if mode not in ("up", "cut", "stall"):
            raise ValueError(mode)
        self._flap_stop.set()
        self._set(mode)

    def _set(self, mode: str) -> None:
        self.mode = mode
        if mode in self.counts:
            self.counts[mode] += 1
        if mode == "cut":
            self._close_all()

    def flap(self, period: float) -> None:
        """Cut and restore the link every ``period`` seconds until ``set`` is called."""
        self._flap_stop.set()
        stop = self._flap_stop = threading.Event()
        self.counts["flap"] += 1

        def run() -> None:
            down = False
            while not stop.wait(period) and not self._stop.is_set():
                down = not down
                self.mode = "cut" if down else "up"
                if down:
                    self._close_all()
        threading.Thread(target=run, daemon=True).start()

    def close(self) -> None:
        """Stop the proxy and drop every connection."""
        self._stop.set()
        self._flap_stop.set()
        with suppress(OSError):
            self._listener.close()
        self._close_all()

    def _close_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                c.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "cut":
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()  # the broker itself is down
                continue
            with self._lock:
                self._conns |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                if self.mode == "cut":
                    return
                if self.mode == "stall":
                    self._stop.wait(TICK)
                    continue
                ready, _, _ = select.select([a, b], [], [], TICK)
                for s in ready:
                    data = s.recv(CHUNK)
                    if not data:
                        return
                    peers[s].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._conns -= {a, b}
            for s in (a, b):
                with suppress(OSError):
                    s.close()
