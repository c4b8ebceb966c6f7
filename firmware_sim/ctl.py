"""The ``firmware-sim-ctl`` command: act as the reader or the technician at a simulated machine.

One subcommand per thing a person does at the cabinet, each one request on the
simulator's control socket (``firmware_sim.control.ControlClient``)::

    kitap firmware-sim-ctl --control /tmp/m1.sock present-card R000001
    kitap firmware-sim-ctl --control /tmp/m1.sock pin 1234
    kitap firmware-sim-ctl --control /tmp/m1.sock insert-return C0000123

The socket may also come from ``KITAP_SIM_CONTROL``. A refusal by the simulator
(a locked door, an empty slot) is printed with its reason and exits with 1.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from firmware_sim.control import ControlClient, ControlError
from firmware_sim.faults import FAULT_KINDS

F = TypeVar("F", bound=Callable[..., Any])

# A reader who put a book in the chute waits this long for the node to decide.
RETURN_WAIT = 10.0


def _client(ctx: click.Context) -> ControlClient:
    client: ControlClient = ctx.obj
    return client


def _acts(fn: F) -> F:
    """Turn the simulator's refusals and an unreachable socket into clear errors."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return fn(_client(ctx), *args, **kwargs)
        except ControlError as exc:
            raise click.ClickException(f"the simulator refused: {exc}") from exc
        except OSError as exc:
            raise click.ClickException(f"cannot reach the simulator at {_client(ctx).path}: "
                                       f"{exc}") from exc
    return wrapper  # type: ignore[return-value]


@click.group("firmware-sim-ctl")
@click.option("--control", "control_path", required=True, envvar="KITAP_SIM_CONTROL",
              metavar="PATH", help="The simulator's control socket (its --control; "
                                   "or KITAP_SIM_CONTROL).")
@click.pass_context
def command(ctx: click.Context, control_path: str) -> None:
    """Act as the reader or the technician at a running ``kitap firmware-sim``."""
    ctx.obj = ControlClient(control_path)


# -- the reader ------------------------------------------------------------------------------

@command.command("present-card")
@click.argument("card")
@_acts
def present_card(ctl: ControlClient, card: str) -> None:
    """Hold CARD to the card reader."""
    ctl.present_card(card)
    click.echo(f"card {card} held to the reader")


@command.command("pin")
@click.argument("pin")
@_acts
def pin(ctl: ControlClient, pin: str) -> None:
    """Type PIN on the machine's PIN pad and press OK."""
    ctl.enter_pin(pin)
    click.echo("PIN typed on the pad")


@command.command("take")
@_acts
def take(ctl: ControlClient) -> None:
    """Take the book waiting in the delivery door."""
    click.echo(f"took {ctl.take_item()} from the delivery door")


@command.command("insert-return")
@click.argument("tag")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=RETURN_WAIT,
              show_default=True, help="Seconds to wait for the node to take or refuse it.")
@_acts
def insert_return(ctl: ControlClient, tag: str, timeout: float) -> None:
    """Put the book TAG into the return chute and wait for the node's answer."""
    reply = ctl.insert_return(tag, timeout=timeout)
    outcome, reason = reply.get("outcome"), reply.get("reason")
    if outcome == "accepted":
        click.echo(f"accepted: {tag} dropped into the return bin")
        return
    click.echo(f"{outcome}: {tag} is back in your hand" + (f" ({reason})" if reason else ""))
    raise SystemExit(1)


# -- the technician --------------------------------------------------------------------------

@command.command("open-door")
@click.option("--key", is_flag=True, help="Use the mechanical key (no unlock by the node).")
@_acts
def open_door(ctl: ControlClient, key: bool) -> None:
    """Open the service door (the node unlocks it, or use --key)."""
    ctl.open_door(key=key)
    click.echo("service door open")


@command.command("close-door")
@_acts
def close_door(ctl: ControlClient) -> None:
    """Close the service door: it locks, and the node scans the slots."""
    ctl.close_door()
    click.echo("service door closed")


@command.command("load")
@click.argument("slot", type=click.IntRange(min=1))
@click.argument("tag")
@_acts
def load(ctl: ControlClient, slot: int, tag: str) -> None:
    """Put the book TAG into the empty SLOT (the door must be open)."""
    ctl.load(slot, tag)
    click.echo(f"slot {slot}: {tag} loaded")


@command.command("remove")
@click.argument("slot", type=click.IntRange(min=1))
@_acts
def remove(ctl: ControlClient, slot: int) -> None:
    """Take the book out of SLOT (the door must be open)."""
    click.echo(f"slot {slot}: {ctl.remove(slot)} removed")


@command.command("empty-bin")
@_acts
def empty_bin(ctl: ControlClient) -> None:
    """Empty the return bin (the door must be open)."""
    books = ctl.empty_bin()
    click.echo(f"{len(books)} books out of the bin" + (f": {' '.join(books)}" if books else ""))


# -- faults ----------------------------------------------------------------------------------

@command.command("fault", epilog="Kinds: " + "; ".join(f"{k}: {v}"
                                                       for k, v in FAULT_KINDS.items()) + ".")
@click.argument("kind", type=click.Choice(sorted(FAULT_KINDS)))
@click.option("--slot", type=click.IntRange(min=1), default=None, help="For vanish.")
@_acts
def fault(ctl: ControlClient, kind: str, slot: int | None) -> None:
    """Make the machine fail the way KIND says."""
    ctl.fault(kind, slot)
    click.echo(f"fault {kind}" + (f" (slot {slot})" if slot is not None else "")
               + ": " + FAULT_KINDS[kind])


@command.command("reboot")
@_acts
def reboot(ctl: ControlClient) -> None:
    """Reboot the controller (RAM lost, slots and bin kept)."""
    ctl.reboot()
    click.echo("controller rebooting")


@command.command("power-cut")
@_acts
def power_cut(ctl: ControlClient) -> None:
    """Cut the power: the simulator dies at once; start it again to restore it."""
    click.echo(f"power cut: simulator process {ctl.power_cut()} is gone")


@command.command("line")
@click.option("--noise", type=click.FloatRange(0, 1), default=None,
              help="Per byte: probability of a flipped bit.")
@click.option("--drop", type=click.FloatRange(0, 1), default=None,
              help="Per byte: probability it is lost.")
@click.option("--dup", type=click.FloatRange(0, 1), default=None,
              help="Per byte: probability it is sent twice.")
@click.option("--connected/--disconnected", default=None,
              help="Put the serial cable back, or pull it.")
@_acts
def line(ctl: ControlClient, **settings: Any) -> None:
    """Make the serial line rude (or pull the cable)."""
    given = {k: v for k, v in settings.items() if v is not None}
    if not given:
        raise click.UsageError("say what to change: --noise, --drop, --dup, --connected "
                               "or --disconnected")
    ctl.line(**given)
    click.echo("line: " + ", ".join(f"{k}={v}" for k, v in given.items()))


# -- looking -----------------------------------------------------------------------------------

@command.command("state")
@click.option("--json", "as_json", is_flag=True, help="Everything, as JSON.")
@_acts
def state(ctl: ControlClient, as_json: bool) -> None:
    """What is in the machine: slots, bin, doors, chute, delivery door, display."""
    st = ctl.state()
    if as_json:
        click.echo(json.dumps(st, ensure_ascii=False, indent=2))
        return
    for text in _describe(st):
        click.echo(text)


def _describe(st: dict[str, Any]) -> list[str]:
    """The simulator's state in a few lines a person reads."""
    door = ("open" if st.get("door_open") else "closed") + \
        (", locked" if st.get("locked") else "")
    delivery = st.get("delivery")
    lines = [
        f"controller {st.get('serial')} (boot {st.get('boot_id')}), link "
        f"{'up' if st.get('link_up') else 'down'}",
        f"display:  {st.get('display') or ''}",
        f"door:     {door}",
        f"chute:    {'open' if st.get('chute_open') else 'closed'}"
        + (f" (holding {st['chute_tag']})" if st.get("chute_tag") else ""),
        f"bin:      {len(st.get('bin') or [])}/{st.get('bin_capacity')}"
        + (" FULL" if st.get("bin_full") else ""),
        f"delivery: {delivery['tag'] if isinstance(delivery, dict) else 'empty'}",
    ]
    if st.get("faults"):
        lines.append("armed:    " + ", ".join(st["faults"]))
    slots = st.get("slots") or {}
    lines.append("slots:")
    lines += [f"  {n:>3}  {tag or '-'}" for n, tag in
              sorted(slots.items(), key=lambda kv: int(kv[0]))]
    return lines
