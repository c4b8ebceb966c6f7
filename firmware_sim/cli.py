"""The ``firmware-sim`` command: a machine controller on a pty or a pyserial URL."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import click

from firmware_sim.controller import (
    DEFAULT_SLOTS,
    MAX_SLOTS,
    TAKE_TIMEOUT,
    Controller,
    ControllerError,
)
from firmware_sim.runner import Runner

logger = logging.getLogger(__name__)


def _setup_logging(verbose: bool) -> None:
    # To stderr: stdout carries the "PTY ..." line a parent process reads.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


@click.command("firmware-sim")
@click.option("--state", "state_path", required=True, type=click.Path(dir_okay=False),
              help="JSON file holding the slots and the return bin (created if missing).")
@click.option("--slots", default=DEFAULT_SLOTS, show_default=True,
              type=click.IntRange(1, MAX_SLOTS), help="Number of slots of a new machine.")
@click.option("--control", "control_path", required=True,
              help="Path of the Unix control socket (reader and technician actions).")
@click.option("--port", "port_url", default=None,
              help="A pyserial URL or device to serve instead of a new pty.")
@click.option("--take-timeout", type=click.FloatRange(min=0.1), default=TAKE_TIMEOUT,
              show_default=True, help="Seconds before an untaken book goes back in its slot.")
@click.option("--auto-take", type=click.FloatRange(min=0.0), default=None,
              help="Take each dispensed book by itself after this many seconds (demos).")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, with the serial trace.")
def command(state_path: str, slots: int, control_path: str, port_url: str | None,
            take_timeout: float, auto_take: float | None, verbose: bool) -> None:
    """Simulate a book-vending machine's controller on a serial line.

    Prints "PTY /dev/pts/N" (or "PORT URL" with --port) once the line and the
    control socket are ready; stops cleanly on SIGTERM or SIGINT.
    """
    _setup_logging(verbose)
    try:
        controller = Controller(state_path, slots=slots, take_timeout=take_timeout,
                                auto_take=auto_take)
    except (OSError, ValueError, KeyError, ControllerError) as exc:
        raise click.ClickException(f"cannot load the state file {state_path}: {exc}") from exc
    runner = Runner(controller, control_path, port_url)
    stop = threading.Event()

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
    click.echo(line)
    sys.stdout.flush()
    try:
        runner.run(stop)
    finally:
        runner.close()
        logger.info("stopped")
