"""What the edge, the cloud and the machine controller must agree on, and nothing else.

Pure code: no sockets, no database, no Flask. Everything here is versioned by
PROTOCOL_VERSION; a message of another version is refused with a reason.
"""
from __future__ import annotations

PROTOCOL_VERSION = 1
