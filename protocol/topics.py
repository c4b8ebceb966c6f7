"""Every MQTT topic name, built and matched in this one module.

    lib/v1/node/{node}/events   node -> cloud, QoS 1, a batch of event envelopes
    lib/v1/node/{node}/ack      cloud -> node, highest contiguous seq applied
    lib/v1/node/{node}/status   node -> all, retained; the last will says offline
    lib/v1/node/{node}/sync     node -> cloud, "my feed revision is R: what changed since?"
    lib/v1/node/{node}/down     cloud -> node, change feed (catalogue, readers, blocks, holds)
    lib/v1/broadcast            cloud -> every node ("the feed is at revision R")
"""
from __future__ import annotations

import re
from typing import Literal

PREFIX = "lib/v1"
NODE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")

Channel = Literal["events", "ack", "status", "sync", "down"]
CHANNELS: tuple[Channel, ...] = ("events", "ack", "status", "sync", "down")

EVENTS_ALL = f"{PREFIX}/node/+/events"
STATUS_ALL = f"{PREFIX}/node/+/status"
SYNC_ALL = f"{PREFIX}/node/+/sync"
BROADCAST = f"{PREFIX}/broadcast"

_TOPIC_RE = re.compile(rf"^{re.escape(PREFIX)}/node/([^/]+)/(events|ack|status|sync|down)$")


def valid_node_id(node: str) -> bool:
    """True if ``node`` may name a node (lower-case letters, digits, dashes; 1-32 chars)."""
    return bool(NODE_ID_RE.match(node))


def node_topic(node: str, channel: Channel) -> str:
    """The topic of ``channel`` for ``node``; refuses a node id that could break the tree."""
    if not valid_node_id(node):
        raise ValueError(f"invalid node id {node!r}")
    return f"{PREFIX}/node/{node}/{channel}"


def shared(topic: str, group: str = "kitap-ingest") -> str:
    """An MQTT 5 shared subscription, so several ingest workers split the nodes."""
    return f"$share/{group}/{topic}"


def parse(topic: str) -> tuple[str, Channel] | None:
    """``(node, channel)`` for a node topic, or None for anything else."""
    m = _TOPIC_RE.match(topic)
    if m is None or not valid_node_id(m.group(1)):
        return None
    channel: Channel = m.group(2)  # type: ignore[assignment]
    return m.group(1), channel
