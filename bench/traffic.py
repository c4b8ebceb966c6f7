"""A city's circulation as the nodes would report it: checkouts, returns, renewals, payments.

``Traffic`` reads where the copies are and which loans are open from the cloud
store, then draws rounds of events that agree with that state (a node lends
only copies that sit there; a return names a copy on loan), numbered from each
node's cursor on. Returns in a round only name loans that were open before
the round, so the order in which the nodes' batches are applied never turns
a fact into a "late" one: every round takes the same path through ingest.
"""
from __future__ import annotations

import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bench.generate import Shape, card, is_blocked, node_specs
from cloud import store as cs
from edge.sync import BATCH_SIZE
from protocol.envelope import encode_batch, make_envelope

# The mix of a day at the desks and machines (the rest are returns).
CHECKOUT_SHARE = 0.47
RENEW_SHARE = 0.05
FEE_SHARE = 0.03
# A branch sees about twice the traffic of a machine.
BRANCH_WEIGHT, MACHINE_WEIGHT = 2.0, 1.0
LOAN_DAYS = 21


@dataclass(frozen=True)
class Batch:
    """One message a node would publish: its envelopes and their payload."""

    node: str
    envelopes: list[dict[str, Any]]
    payload: bytes


class Traffic:
    """Draws events that agree with the store's state, round after round."""

    def __init__(self, shape: Shape, seed: int = 11) -> None:
        self.shape = shape
        self.rng = random.Random(seed)
        self.nodes = node_specs(shape)
        self.kind = {n.id: n.kind for n in self.nodes}
        self.available: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
        self.open: dict[str, tuple[str, str, str]] = {}   # copy -> (loan id, reader, node)
        self.seq: dict[str, int] = {}
        self.closed: dict[tuple[str, int], str] = {}      # (node, seq) of a return -> loan id
        self._hlc_ms = 0

    def load(self) -> Traffic:
        """Read the copies on the shelves and in slots, the open loans, the cursors."""
        held = {c for (c,) in cs.Hold.select(cs.Hold.copy).where(
            cs.Hold.copy.is_null(False) & cs.Hold.status.in_(["waiting", "ready"])).tuples()}
        for bc, node, slot in (cs.Copy.select(cs.Copy.barcode, cs.Copy.location_node,
                                              cs.Copy.slot)
                               .where(cs.Copy.status.in_(["in_slot", "on_shelf"])).tuples()):
            if bc not in held and node in self.kind:
                self.available[node].append((bc, slot))
        for lid, bc, reader, node in (cs.Loan.select(cs.Loan.id, cs.Loan.copy, cs.Loan.reader,
                                                     cs.Loan.node)
                                      .where(cs.Loan.returned_at.is_null()).tuples()):
            self.open[bc] = (lid, reader, node)
        cursors = dict(cs.NodeCursor.select(cs.NodeCursor.node, cs.NodeCursor.applied_seq)
                       .tuples())
        self.seq = {n.id: int(cursors.get(n.id, 0)) for n in self.nodes}
        for node in self.available.values():
            self.rng.shuffle(node)
        return self

    def _reader(self) -> str:
        while True:
            i = self.rng.randrange(self.shape.readers)
            if not is_blocked(self.shape, i):
                return card(i)

    def _hlc(self) -> str:
        self._hlc_ms = max(self._hlc_ms + 1, int(time.time() * 1000))
        return f"{self._hlc_ms:013d}-00000"

    def share(self, total: int) -> dict[str, int]:
        """How many of ``total`` events each node sends."""
        w = {n.id: BRANCH_WEIGHT if n.kind == "branch" else MACHINE_WEIGHT for n in self.nodes}
        scale = total / sum(w.values())
        counts = {n: int(x * scale) for n, x in w.items()}
        for n in list(counts)[: total - sum(counts.values())]:
            counts[n] += 1
        return counts

    def round(self, total: int) -> dict[str, list[dict[str, Any]]]:
        """``total`` events over all nodes, as envelopes per node in seq order."""
        now = datetime.now(UTC)
        due = (now.date() + timedelta(days=LOAN_DAYS))
        open_before = list(self.open)
        self.rng.shuffle(open_before)
        returned_here: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
        out: dict[str, list[dict[str, Any]]] = {}
        for node, n in self.share(total).items():
            envs = []
            for _ in range(n):
                kind, body, closed = self._event(node, open_before, returned_here, due)
                self.seq[node] += 1
                if closed:
                    self.closed[(node, self.seq[node])] = closed
                envs.append(make_envelope(node, self.seq[node], self._hlc(), now, kind, body))
            out[node] = envs
        for node, copies in returned_here.items():
            self.available[node].extend(copies)
        return out

    def _event(self, node: str, open_before: list[str],
               returned_here: dict[str, list[tuple[str, int | None]]],
               due: date) -> tuple[str, dict[str, Any], str | None]:
        r = self.rng.random()
        here = self.available[node]
        if r < CHECKOUT_SHARE and here:
            bc, slot = here.pop()
            loan_id, reader = uuid.UUID(int=self.rng.getrandbits(128)).hex, self._reader()
            self.open[bc] = (loan_id, reader, node)
            return "loan.checkout", {"loan_id": loan_id, "copy": bc, "reader": reader,
                                     "due": due, "slot": slot}, None
        while open_before:
            bc = open_before.pop()
            if bc not in self.open:
                continue
            loan_id, reader, lent_at = self.open[bc]
            if r < 1 - RENEW_SHARE - FEE_SHARE:
                del self.open[bc]
                if self.kind[node] == "branch":
                    returned_here[node].append((bc, None))
                mine = lent_at == node
                return "loan.return", {"copy": bc, "loan_id": loan_id if mine else None,
                                       "reader": reader if mine else None}, loan_id
            if r < 1 - FEE_SHARE:
                return "loan.renew", {"loan_id": loan_id, "copy": bc, "reader": reader,
                                      "due": due}, None
            break
        return "fee.paid", {"payment_id": uuid.UUID(int=self.rng.getrandbits(128)).hex,
                            "reader": self._reader(), "amount": 5_000, "kind": "fee",
                            "description": "overdue fine"}, None


def batches(per_node: dict[str, list[dict[str, Any]]], size: int = BATCH_SIZE) -> list[Batch]:
    """The messages the nodes would publish, interleaved node by node as they would arrive."""
    queues = {node: [envs[i:i + size] for i in range(0, len(envs), size)]
              for node, envs in per_node.items()}
    out: list[Batch] = []
    while any(queues.values()):
        for node, q in queues.items():
            if q:
                envs = q.pop(0)
                out.append(Batch(node, envs, encode_batch(envs)))
    return out
