"""The ``firmware-sim`` command: a machine controller on a pty or a pyserial URL."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import click
from click.core import ParameterSource

from firmware_sim.controller import (
    DEFAULT_SLOTS,
    MAX_SLOTS,
    TAKE_TIMEOUT,
    Controller,
    ControllerError,
)
from firmware_sim.faults import HANG_STEPS, FaultConfig, Hang, fault_config, load_config
from firmware_sim.runner import Runner
from firmware_sim.state import BIN_CAPACITY
from protocol.frames import ACK_TIMEOUT

logger = logging.getLogger(__name__)

_rate = click.FloatRange(0.0, 1.0)


def _setup_logging(verbose: bool) -> None:
    # To stderr: stdout carries the "PTY ..." line a parent process reads.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def _options(ctx: click.Context, given: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then the config file, then the options given on the command line."""
    config_path = given.pop("config_path")
    from_file: dict[str, Any] = {}
    if config_path:
        try:
            from_file = load_config(config_path)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--config") from exc
        unknown = set(from_file) - set(given)
        if unknown:
            raise click.BadParameter(f"unknown keys {sorted(unknown)}", param_hint="--config")
    out = dict(given)
    for name, value in from_file.items():
        if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None):
            out[name] = value
    if isinstance(out.get("empty_slots"), tuple):
        out["empty_slots"] = list(out["empty_slots"])
    return out


@click.command("firmware-sim")
@click.option("--state", "state_path", default=None, type=click.Path(dir_okay=False),
              help="JSON file holding the slots and the return bin (created if missing).")
@click.option("--control", "control_path", default=None,
              help="Path of the Unix control socket (reader and technician actions).")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="A JSON file of options (keys as the long options, with underscores); "
                   "options on the command line win.")
@click.option("--slots", default=DEFAULT_SLOTS, show_default=True,
              type=click.IntRange(1, MAX_SLOTS), help="Number of slots of a new machine.")
@click.option("--bin-capacity", default=BIN_CAPACITY, show_default=True,
              type=click.IntRange(1, 1000), help="Books the return bin of a new machine holds.")
@click.option("--port", "port_url", default=None,
              help="A pyserial URL or device to serve instead of a new pty.")
@click.option("--link", default=None,
              help="Keep a symlink at this path pointing to the current pty (a stable name "
                   "for the host across restarts, like /dev/serial/by-id/...).")
@click.option("--take-timeout", type=click.FloatRange(min=0.1), default=TAKE_TIMEOUT,
              show_default=True, help="Seconds before an untaken book goes back in its slot.")
@click.option("--auto-take", type=click.FloatRange(min=0.0), default=None,
              help="Take each dispensed book by itself after this many seconds (demos).")
@click.option("--ack-timeout", type=click.FloatRange(min=0.01), default=ACK_TIMEOUT,
              show_default=True, help="Seconds before an un-ACKed frame is sent again.")
@click.option("--jam-rate", type=_rate, default=0.0, help="Probability that a dispense jams.")
@click.option("--misread-rate", type=_rate, default=0.0,
              help="Probability that the chute reads a book as a tag that is no library's.")
@click.option("--empty-slot", "empty_slots", type=int, multiple=True,
              help="Empty this slot at boot without telling anyone (repeatable).")
@click.option("--noise", type=_rate, default=0.0, help="Per byte: probability of a flipped bit.")
@click.option("--drop", type=_rate, default=0.0, help="Per byte: probability it is lost.")
@click.option("--dup", type=_rate, default=0.0, help="Per byte: probability it is sent twice.")
@click.option("--seed", type=int, default=None, help="Seed of the faults' random generator.")
@click.option("--hang-at", type=click.Choice(sorted(HANG_STEPS)), default=None,
              help="Stop dead at this step (for a test to cut the power there).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, with the serial trace.")
@click.pass_context
def command(ctx: click.Context, /, **given: Any) -> None:
    """Simulate a book-vending machine's controller on a serial line.

    Prints "PTY /dev/pts/N" (or "PORT URL" with --port) once the line and the
    control socket are ready; stops cleanly on SIGTERM or SIGINT.
    """
    opts = _options(ctx, given)
    _setup_logging(bool(opts["verbose"]))
    for required in ("state_path", "control_path"):
        if not opts.get(required):
            flag = "--" + required.removesuffix("_path")
            raise click.UsageError(f"{flag} is required (on the command line or in --config)")
    try:
        faults = fault_config(opts)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(f"faults: {exc}") from exc

    def make() -> Controller:
        return Controller(opts["state_path"], slots=opts["slots"],
                          take_timeout=opts["take_timeout"], auto_take=opts["auto_take"],
                          bin_capacity=opts["bin_capacity"], ack_timeout=opts["ack_timeout"],
                          faults=faults)

    stop = threading.Event()
    try:
        runner = Runner(make, opts["control_path"], opts["port_url"], faults=faults,
                        link=opts["link"])
    except Hang as hang:  # a power cut while booting: the test kills us here
        logger.warning("HANG at %s: %s", hang.step, HANG_STEPS[hang.step])
        stop.wait()
        return
    except (OSError, ValueError, KeyError, ControllerError) as exc:
        raise click.ClickException(f"cannot load the state file {opts['state_path']}: "
                                   f"{exc}") from exc
    _run(runner, stop, faults)


def _run(runner: Runner, stop: threading.Event, faults: FaultConfig) -> None:
    def _stop(signum: int, frame: Any) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        line = runner.open()
    except OSError as exc:
        runner.close()
        raise click.ClickException(f"cannot open the line or the control socket: {exc}") from exc
    if faults != FaultConfig():
        logger.warning("faults configured: %s", faults)
    click.echo(line)
    sys.stdout.flush()
    try:
        runner.run(stop)
    except ControllerError as exc:  # stopped while hung at a step
        logger.info("%s", exc)
    finally:
        runner.close()
        logger.info("stopped")
