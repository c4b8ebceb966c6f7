"""A month of a small city network's life in a cloud database, for the console's and the
catalogue's tests and screenshots: the sample fund, loans over 30 days, debtors, holds,
faults, staff logins and readers with PINs."""
from __future__ import annotations

import json
import random
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kitap.sample_data import NodeSpec, default_nodes, generate

ADMIN = ("admin", "admin-password-1")
OPERATOR = ("olga", "operator-password-1")
BRANCH = ("dana", "branch-password-1")      # branch staff of b-central
OTHER_BRANCH = "b-zhetisu"
# A second branch for the "other branch" and "offline node" checks.
NODES = [*default_nodes(), NodeSpec(OTHER_BRANCH, "branch", "Zhetisu District Library", 0)]


def seed(path: Path | str, *, copies: int = 1500, readers: int = 120, days: int = 30,
         seed_: int = 11) -> dict[str, Any]:
    """Fill a cloud database (a SQLite path, or any URL) with a month of history."""
    from cloud import accounts, actions, debts, feed
    from cloud import store as cs

    data = generate(NODES, copies=copies, readers=readers, seed=seed_)
    url = path if isinstance(path, str) else f"sqlite:///{path}"
    cs.connect(url)
    cs.seed(nodes=[{"id": n.id, "kind": n.kind, "name": n.name} for n in data.nodes],
            titles=[{"id": t.id, "title": t.title, "author": t.author, "isbn": t.isbn,
                     "language": t.language, "item_type": t.item_type, "year": t.year}
                    for t in data.titles],
            readers=[{"card": r.card, "name": r.name, "category": r.category,
                      "pin_hash": accounts.hash_pin(r.pin)} for r in data.readers],
            copies=[{"barcode": c.barcode, "title_id": c.title_id, "home_node": c.home_node,
                     "location_node": c.location_node, "slot": c.slot,
                     "status": "in_slot" if c.slot is not None else "on_shelf"}
                    for c in data.copies])
    rng = random.Random(seed_)
    now = datetime.now(UTC)
    titles_by_pop = sorted(data.titles, key=lambda t: rng.random() ** 0.5)
    weight = {t.id: 1 / (i + 3) for i, t in enumerate(titles_by_pop)}
    by_node: dict[str, list[Any]] = {}
    for c in data.copies:
        by_node.setdefault(c.location_node, []).append(c)
    hours = [0.1] * 8 + [0.5, 1, 1.2, 1.3, 1.6, 1.4, 1.2, 1.3, 1.6, 2.2, 2.4, 1.8, 1.1, 0.6, 0.3,
                         0.2]
    per_day = {"b-central": 26, "m-almaly": 14, "m-mega": 18, OTHER_BRANCH: 9}
    rows = []
    for d in range(days, 0, -1):
        day0 = (now - timedelta(days=d)).replace(hour=0, minute=0, second=0, microsecond=0)
        weekend = day0.weekday() >= 5
        for node, n in per_day.items():
            stock = by_node.get(node, [])
            for _ in range(int(n * (1.3 if weekend else 1.0) * rng.uniform(0.7, 1.3))):
                c = rng.choices(stock, weights=[weight[x.title_id] for x in stock])[0]
                hour = rng.choices(range(24), weights=hours)[0]
                out = day0 + timedelta(hours=hour - 5, minutes=rng.randrange(60))
                # Back after 3 to 20 days, at the library's busy hours, and before now.
                held = rng.uniform(3, 20)
                if out + timedelta(days=held) > now:
                    held = rng.uniform(0.01, 0.98) * (now - out).total_seconds() / 86400
                back = out + timedelta(days=held)
                reader = rng.choice(data.readers).card
                rows.append({"id": uuid.uuid4().hex, "copy": c.barcode, "reader": reader,
                             "node": node, "checked_out_at": out,
                             "due": (out + timedelta(days=21)).date(),
                             "returned_at": min(back, now - timedelta(minutes=5)),
                             "returned_node": rng.choice(list(per_day)),
                             "close_reason": "returned", "fine_settled": True})
    with cs.db.atomic():
        for i in range(0, len(rows), 300):
            cs.Loan.insert_many(rows[i:i + 300]).execute()
    # Readers who kept books too long: open loans, copies on loan, fines in the ledger.
    debtors = rng.sample(data.readers, 9)
    overdue_loans = []
    lent: set[str] = set()
    with feed.transaction():
        for k, r in enumerate(debtors):
            node = ["b-central", "m-almaly", "m-mega", OTHER_BRANCH][k % 4]
            for _ in range(1 + k % 3):
                c = rng.choice([x for x in by_node[node] if x.barcode not in lent])
                lent.add(c.barcode)
                out = now - timedelta(days=25 + 4 * k + rng.randrange(5))
                loan_id = uuid.uuid4().hex
                cs.Loan.create(id=loan_id, copy=c.barcode, reader=r.card, node=node,
                               checked_out_at=out, due=(out + timedelta(days=21)).date())
                cs.Copy.update(status="on_loan", location_node=None, slot=None,
                               loan_id=loan_id).where(cs.Copy.barcode == c.barcode).execute()
                overdue_loans.append(loan_id)
            debts.post(r.card, "fine", 5000 * (k + 1), now=now, note="overdue fines")
            feed.reader_changed(r.card)
    actions.block(debtors[-1].card, "4 books overdue for over a month")
    # Readers waiting for popular titles, some for pickup at the machines.
    for i, t in enumerate(titles_by_pop[:6]):
        for r in data.readers[20 + 3 * i: 23 + 3 * i]:
            try:
                actions.place_hold(r.card, t.id, ["m-almaly", "m-mega", "b-central"][i % 3])
            except actions.ActionError:
                pass
    cs.StaffException.create(kind="device_fault.jam", node="m-mega", seq=0,
                             detail="slot 12: the dispenser jammed", created_at=now)
    cs.StaffException.create(kind="audit_cloud_mismatch", node="m-almaly", seq=0,
                             copy=by_node["m-almaly"][0].barcode, created_at=now,
                             detail=f"the cloud places copy {by_node['m-almaly'][0].barcode} in "
                                    "slot 3 of m-almaly, but the slot scan found that slot empty")
    cs.StaffException.create(kind="return_of_copy_not_on_loan", node=OTHER_BRANCH, seq=4,
                             copy="X00042", created_at=now,
                             detail=f"{OTHER_BRANCH} took back copy X00042, which the cloud had "
                                    "no loan for; it is now on the shelf there")
    accounts.add_staff(*ADMIN, "administrator", name="Асель Нурланова")
    accounts.add_staff(*OPERATOR, "operator", name="Ольга Ким")
    accounts.add_staff(*BRANCH, "branch_staff", "b-central", name="Дана Серикова")
    for n in data.nodes:
        status = {"v": 1, "node": n.id, "online": False, "kind": n.kind}
        cs.Node.update(status=json.dumps(status)).where(cs.Node.id == n.id).execute()
    cs.db.close()
    return {"url": url, "data": data, "debtors": debtors, "overdue": overdue_loans}


def machine_state(db: Path, node: str, path: Path, slots: int = 40) -> None:
    """A simulator's state file holding the slots as the cloud has them (a copy on loan is out)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("select barcode, slot from copy where location_node=? and "
                           "status='in_slot'", (node,)).fetchall()
    state: dict[str, str | None] = {str(i): None for i in range(1, slots + 1)}
    state.update({str(slot): barcode for barcode, slot in rows})
    path.write_text(json.dumps({"slots": state, "bin": [], "bin_capacity": 60}))
