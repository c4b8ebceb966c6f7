"""Client of the simulator's control socket: act as the reader or the technician."""
from __future__ import annotations

import json
import socket
from typing import Any, Final

# Every op but insert_return answers at once; this only guards against a hung simulator.
CALL_TIMEOUT: Final = 5.0


class ControlError(Exception):
    """The simulator refused the request (``{"ok": false, "error": ...}``)."""


class ControlClient:
    """Talks to a running ``firmware-sim`` over its Unix control socket."""

    def __init__(self, path: str) -> None:
        self.path = path

    def call(self, op: str, *, wait: float = CALL_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send one request and return the reply; ControlError if it says ok: false."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(wait)
            sock.connect(self.path)
            sock.sendall(json.dumps({"op": op, **fields}, ensure_ascii=False).encode() + b"\n")
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ControlError("the simulator closed the connection")
                buf += chunk
        reply: dict[str, Any] = json.loads(buf)
        if not reply.get("ok"):
            raise ControlError(str(reply.get("error", "unknown error")))
        return reply

    def present_card(self, card: str) -> None:
        """Hold ``card`` to the card reader."""
        self.call("present_card", card=card)

    def insert_return(self, tag: str, timeout: float = 10.0) -> dict[str, Any]:
        """Put a book into the return chute; blocks until the host decides or ``timeout``.

        Returns ``{"outcome": "accepted" | "rejected" | "timeout" | "no_answer",
        "tag": ..., "reason": ...}``.
        """
        reply = self.call("insert_return", wait=timeout + CALL_TIMEOUT, tag=tag, timeout=timeout)
        return {k: v for k, v in reply.items() if k != "ok"}

    def take_item(self) -> str:
        """Take the book from the delivery door; returns its tag."""
        return str(self.call("take_item")["tag"])

    def enter_pin(self, pin: str) -> None:
        """Type a PIN on the pad and press OK."""
        self.call("enter_pin", pin=pin)

    def open_door(self, *, key: bool = False) -> None:
        """Open the service door (unlocked by the node, or with the mechanical ``key``)."""
        self.call("open_door", key=key)

    def close_door(self) -> None:
        """Close the service door (it locks by itself)."""
        self.call("close_door")

    def load(self, slot: int, tag: str) -> None:
        """Put a book into an empty slot (technician; the door must be open)."""
        self.call("load", slot=slot, tag=tag)

    def remove(self, slot: int) -> str:
        """Take the book out of a slot (technician; the door must be open); returns its tag."""
        return str(self.call("remove", slot=slot)["tag"])

    def empty_bin(self) -> list[str]:
        """Empty the return bin (technician; the door must be open); returns the books."""
        return list(self.call("empty_bin")["books"])

    def restock(self, loads: dict[int, str]) -> None:
        """Open the door with the key, load ``{slot: tag}``, close the door (test setup)."""
        self.open_door(key=True)
        for slot, tag in loads.items():
            self.load(slot, tag)
        self.close_door()

    def state(self) -> dict[str, Any]:
        """Slots, bin, doors, chute, display, link, logs and pending events."""
        return {k: v for k, v in self.call("state").items() if k != "ok"}

    def fault(self, kind: str, slot: int | None = None) -> None:
        """Arm or cause a fault: jam, no_take, misread, vanish (slot), bin_full."""
        if slot is None:
            self.call("fault", kind=kind)
        else:
            self.call("fault", kind=kind, slot=slot)

    def reboot(self) -> None:
        """Reboot the controller: new boot id, POWER_UP, RAM lost, the state file kept."""
        self.call("reboot")

    def power_cut(self) -> int:
        """Cut the simulator's power: the process dies at once (SIGKILL); returns its pid."""
        return int(self.call("power_cut")["pid"])

    def line(self, **settings: Any) -> None:
        """Change the line: ``noise``, ``drop``, ``dup`` (rates), ``connected`` (cable)."""
        self.call("line", **settings)
