"""Exceptions raised by the protocol layer."""
from __future__ import annotations


class ProtocolError(Exception):
    """Base of every protocol error; ``reason`` is readable by a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RejectedMessage(ProtocolError):
    """An MQTT payload that fails validation: wrong version, type, node or shape."""


class FrameError(ProtocolError):
    """A serial frame that cannot be decoded (bad CRC, bad length)."""
