"""The change feed from the cloud down to the nodes: what each message holds.

The cloud keeps one change log with a global revision. A change is scoped to
every node ("*": readers, blocks, titles, policies, config) or to one node (the
copies that sit there, the holds to hand out there).

    node  -> cloud  sync   {"v":1, "node": N, "rev": R}          what changed after R?
    cloud -> node   down   {"v":1, "kind": "changes", "from_rev": R, "to_rev": T,
                            "more": false, "changes": [...]}    all of N's changes in (R, T]
    cloud -> node   down   {"v":1, "kind": "snapshot", "snapshot": id, "rev": T,
                            "part": i, "parts": n, "changes": [...]}   the whole state at T
    cloud -> all    broadcast {"v":1, "kind": "poke", "rev": T}  the log reached T

A node applies "changes" only when ``from_rev`` equals its own revision, so a
duplicate, a stale answer or an answer to another request changes nothing; it
then asks again from ``to_rev`` while ``more`` is true. A snapshot is applied
when all its parts are in, in one transaction.
"""
from __future__ import annotations

import json
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from protocol import PROTOCOL_VERSION
from protocol.errors import RejectedMessage
from protocol.topics import NODE_ID_RE

# What every build of the node understands: a sync request that names no
# entities (an older node's) is answered with these alone.
BASE_ENTITIES = ("reader", "title", "copy", "policy", "hold", "config")
ENTITIES = BASE_ENTITIES + (
    # services (cloud/services.py): every node sells every branch's sessions
    "partner", "discount", "service", "session", "booking", "membership")
# Changes per "changes" message and items per snapshot part: ~200 KB messages,
# far under the broker's limits, few enough round trips for a catching-up node.
CHANGES_PER_MESSAGE = 1000
SNAPSHOT_PART = 2000
MAX_REASON = 300


class ChangeSchema(Schema):
    """One change: an entity's row upserted or deleted at a revision."""

    class Meta:
        unknown = RAISE

    rev = fields.Int(required=True, strict=True, validate=validate.Range(min=1))
    entity = fields.Str(required=True, validate=validate.OneOf(ENTITIES))
    key = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    op = fields.Str(required=True, validate=validate.OneOf(["upsert", "delete"]))
    data = fields.Dict(load_default=dict)


class SyncRequestSchema(Schema):
    """node -> cloud: the node's feed revision."""

    class Meta:
        unknown = EXCLUDE

    v = fields.Int(required=True, strict=True, validate=validate.Equal(PROTOCOL_VERSION))
    node = fields.Str(required=True, validate=validate.Regexp(NODE_ID_RE))
    rev = fields.Int(required=True, strict=True, validate=validate.Range(min=0))
    # The entities this node's build applies; the cloud sends it no others, so a
    # cloud upgraded first never stalls an older node with a kind it cannot apply.
    # None: an older node, told BASE_ENTITIES only. Unknown names are ignored
    # (a newer node asking an older cloud).
    entities = fields.List(fields.Str(validate=validate.Length(min=1, max=32)),
                           load_default=None, validate=validate.Length(max=64))


class DownSchema(Schema):
    """cloud -> node: changes, a snapshot part, or a poke."""

    class Meta:
        unknown = EXCLUDE

    v = fields.Int(required=True, strict=True, validate=validate.Equal(PROTOCOL_VERSION))
    kind = fields.Str(required=True, validate=validate.OneOf(["changes", "snapshot", "poke"]))
    rev = fields.Int(load_default=None, strict=True)
    from_rev = fields.Int(load_default=None, strict=True)
    to_rev = fields.Int(load_default=None, strict=True)
    more = fields.Bool(load_default=False)
    snapshot = fields.Str(load_default=None)
    part = fields.Int(load_default=None, strict=True)
    parts = fields.Int(load_default=None, strict=True)
    changes = fields.List(fields.Nested(ChangeSchema), load_default=list)


_SYNC, _DOWN = SyncRequestSchema(), DownSchema()


def _load(schema: Schema, payload: bytes, what: str) -> dict[str, Any]:
    try:
        result: dict[str, Any] = schema.load(json.loads(payload))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RejectedMessage(f"{what} is not JSON: {exc}") from exc
    except ValidationError as err:
        # A snapshot part has thousands of rows: name the first problems, not all.
        raise RejectedMessage(f"bad {what}: {str(err.messages)[:MAX_REASON]}") from err
    return result


def encode_sync(node: str, rev: int, entities: tuple[str, ...] = ENTITIES) -> bytes:
    """A node's request for what changed after ``rev``, naming the entities it applies."""
    return json.dumps({"v": PROTOCOL_VERSION, "node": node, "rev": rev,
                       "entities": list(entities)}).encode()


def decode_sync(payload: bytes) -> dict[str, Any]:
    """Validate a sync request; ``entities`` becomes the known ones the node applies."""
    req = _load(_SYNC, payload, "sync request")
    asked = req["entities"]
    req["entities"] = BASE_ENTITIES if asked is None else tuple(e for e in ENTITIES
                                                                if e in asked)
    return req


def encode_down(kind: str, **fields_: Any) -> bytes:
    """A down message (see the module docstring for the fields of each kind)."""
    return json.dumps({"v": PROTOCOL_VERSION, "kind": kind, **fields_}, ensure_ascii=False,
                      default=str).encode()


def decode_down(payload: bytes) -> dict[str, Any]:
    """Validate a down or broadcast message, with every change in it."""
    msg = _load(_DOWN, payload, "feed message")
    kind = msg["kind"]
    if kind == "changes" and (msg["from_rev"] is None or msg["to_rev"] is None
                              or msg["to_rev"] < msg["from_rev"]):
        raise RejectedMessage("bad feed message: changes need from_rev <= to_rev")
    if kind == "snapshot" and (msg["snapshot"] is None or msg["rev"] is None
                               or msg["part"] is None or msg["parts"] is None
                               or not 0 <= msg["part"] < msg["parts"]):
        raise RejectedMessage("bad feed message: a snapshot part needs snapshot, rev, part, parts")
    if kind == "poke" and msg["rev"] is None:
        raise RejectedMessage("bad feed message: a poke needs rev")
    return msg
