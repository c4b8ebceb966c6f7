"""``kitap admin`` commands for debts, holds' logistics, scheduled jobs and the feed.

Amounts are typed in tenge (``12.50``) and kept in tiyn. Each command acts on
the store ``kitap admin --db URL`` bound; nodes learn the outcome from the feed.
A staff decision made here goes to the audit trail like one made in the console
(actor ``cli``, with the OS user who ran it), in the same transaction.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import click


class Tenge(click.ParamType[int]):
    """An amount in tenge, as tiyn."""

    name = "tenge"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        """``"12.50"`` -> 1250."""
        if isinstance(value, int):
            return value
        try:
            amount = Decimal(str(value).replace(",", "."))
        except InvalidOperation:
            self.fail(f"{value!r} is not an amount in tenge", param, ctx)
        if amount < 0:
            self.fail("an amount cannot be negative", param, ctx)
        return int((amount * 100).to_integral_value())


TENGE = Tenge()
# Of a rejected message's payload, what `kitap admin rejected` prints: enough to
# see what it was; the console shows it all.
PAYLOAD_SHOWN = 200


def act(fn: Callable[..., Any], *args: Any, action: str, target: str,
        detail: str | Callable[[Any], str] = "", node: str | None = None) -> Any:
    """Run a ``cloud.actions`` function and its audit entry in one transaction.

    ``detail`` may be a function of the action's result (a new hold's id). A
    refusal (``ActionError``) changes nothing and becomes the command's error.
    """
    from cloud import audit, feed
    from cloud.actions import ActionError

    try:
        with feed.transaction():
            result = fn(*args)
            audit.record_cli(action, target, detail(result) if callable(detail) else detail,
                             node=node)
    except ActionError as exc:
        raise click.ClickException(str(exc)) from exc
    return result


@click.command("overdue-run")
@click.option("--today", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Count overdue days up to this day (default: today in the library).")
def overdue_run(today: Any) -> None:
    """Declare long-overdue copies lost, post fines, apply blocks, queue notices — now."""
    from cloud import debts

    day: date | None = today.date() if today else None
    r = debts.overdue_run(today=day)
    click.echo(f"overdue run for {r.today}: {r.readers_checked} readers checked, "
               f"{r.declared_lost} copies declared lost, {r.posted / 100:.2f} tenge posted, "
               f"{r.blocked} blocked, {r.unblocked} unblocked, {r.notices} notices queued")


@click.command("jobs-run")
@click.argument("names", nargs=-1)
def jobs_run(names: tuple[str, ...]) -> None:
    """Run the scheduled jobs now (all, or those named: notices holds overdue compact)."""
    from cloud import jobs

    bad = jobs.unknown(list(names))
    if bad:
        raise click.ClickException(f"no job {', '.join(bad)} (jobs: "
                                   f"{', '.join(jobs.BY_NAME)})")
    for name, result in jobs.run(list(names) or None).items():
        click.echo(f"{name}: {result}")


@click.command()
@click.option("--location", default=None, help="Only loans made at this node.")
@click.option("--min-days", type=int, default=0, show_default=True)
@click.option("--min-amount", type=TENGE, default=0, help="Owing at least this (tenge).")
def debtors(location: str | None, min_days: int, min_amount: int) -> None:
    """The debtor list: readers with books overdue or money owed, longest overdue first."""
    from cloud import debts, fines

    rows = debts.debtors(location=location, min_days=min_days, min_amount=min_amount)
    for d in rows:
        click.echo(f"{d.card}\t{d.name}\t{d.category}\towes {fines.tenge(d.owed)}\t"
                   f"{d.overdue_items} overdue (up to {d.max_days_overdue} days)\t"
                   f"{','.join(d.locations) or '-'}\t{d.blocked_reason or ''}")
    click.echo(f"{len(rows)} debtors")


@click.command()
@click.argument("card")
@click.argument("amount", type=TENGE)
@click.option("--reason", required=True, help="Why the debt is forgiven (kept in the ledger).")
def waive(card: str, amount: int, reason: str) -> None:
    """Forgive part of a reader's debt (AMOUNT in tenge)."""
    from cloud import actions, fines

    act(actions.waive, card, amount, reason, action="reader.waive", target=f"reader:{card}",
        detail=f"{amount / 100:.2f} KZT: {reason}")
    click.echo(f"waived {fines.tenge(amount)} for {card}: {reason}")


@click.command("fine-policy")
@click.argument("item_type")
@click.option("--per-day", type=TENGE, required=True, help="Tenge per day overdue (0: none).")
@click.option("--cap", type=TENGE, default=None, help="The most one loan's fine can reach.")
@click.option("--grace-days", type=int, default=0, show_default=True)
@click.option("--replacement", type=TENGE, default=0, help="Charged when a copy is lost.")
def fine_policy(item_type: str, per_day: int, cap: int | None, grace_days: int,
                replacement: int) -> None:
    """Set the fines for an item type ("*": any)."""
    from cloud import actions

    act(actions.set_fine_policy, item_type, per_day, cap, grace_days, replacement,
        action="fines.set", target=f"fines:{item_type}",
        detail=f"per day {per_day}, cap {cap}, grace {grace_days}, replacement {replacement}")
    click.echo(f"fines for {item_type}: {per_day / 100:.2f}/day, cap "
               f"{'none' if cap is None else f'{cap / 100:.2f}'}, {grace_days} days grace, "
               f"replacement {replacement / 100:.2f}")


@click.command()
@click.argument("category")
@click.argument("kind")
@click.argument("percent", type=int)
def discount(category: str, kind: str, percent: int) -> None:
    """Set a reader category's discount on a kind of charge (membership, service, fine...)."""
    from cloud import actions

    act(actions.set_discount, category, kind, percent, action="discount.set",
        target=f"discount:{category}/{kind}", detail=f"{percent} %")
    click.echo(f"{category}: {percent} % off {kind}")


@click.command()
@click.argument("collection_id")
@click.option("--floating/--fixed", default=True,
              help="Floating copies stay where returned; fixed ones go home.")
@click.option("--name", default="")
def collection(collection_id: str, floating: bool, name: str) -> None:
    """Set a collection's return policy."""
    from cloud import actions

    act(actions.set_collection, collection_id, floating, name, action="collection.set",
        target=f"collection:{collection_id}", detail="floating" if floating else "fixed")
    click.echo(f"collection {collection_id}: {'floating' if floating else 'fixed'}")


@click.command()
@click.argument("barcode")
@click.option("--reason", required=True)
def withdraw(barcode: str, reason: str) -> None:
    """Take a copy out of the fund."""
    from cloud import actions

    act(actions.withdraw, barcode, reason, action="copy.withdraw", target=f"copy:{barcode}",
        detail=reason)
    click.echo(f"copy {barcode} withdrawn: {reason}")


@click.command("ledger-check")
def ledger_check() -> None:
    """Prove every reader's balance equals their ledger (exit 1 if not); name orphan cards."""
    from cloud import debts, fines

    found = debts.check_ledger()
    bad = [(card, owed, total) for card, owed, total in found if owed is not None]
    for card, owed, total in bad:
        click.echo(f"{card}: balance {owed}, ledger {total}")
    for card, owed, total in found:
        if owed is None:
            click.echo(f"{card}: no such reader, but the ledger has {fines.tenge(total)} for "
                       "it (paid at a node before the card's registration reached the cloud)")
    if bad:
        raise SystemExit(1)
    click.echo("every balance equals its ledger")


@click.command()
@click.option("--node", default=None, help="Only messages from this node.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
def rejected(node: str | None, limit: int) -> None:
    """The messages the cloud refused at the door (newest first), kept for inspection."""
    from cloud import store as s

    query = s.RejectedMessage.select()
    if node:
        query = query.where(s.RejectedMessage.node == node)
    total = query.count()
    for m in query.order_by(s.RejectedMessage.received_at.desc(),
                            s.RejectedMessage.id.desc()).limit(limit):
        click.echo(f"#{m.id} {m.received_at:%Y-%m-%d %H:%M:%S} {m.node or '-'} {m.topic}: "
                   f"{m.reason}")
        click.echo(f"    {m.payload[:PAYLOAD_SHOWN]!r}")
    click.echo(f"{min(limit, total)} of {total} rejected messages")


COMMANDS = (overdue_run, jobs_run, debtors, waive, fine_policy, discount, collection, withdraw,
            ledger_check, rejected)


def register(group: click.Group) -> None:
    """Add these commands to ``kitap admin``."""
    for cmd in COMMANDS:
        group.add_command(cmd)
