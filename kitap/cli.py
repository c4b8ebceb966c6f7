"""The ``kitap`` command: one subcommand per process, plus the demo."""
from __future__ import annotations

import click

from firmware_sim.cli import command as firmware_sim_command
from kitap.serve import run, setup_logging, split_hostport


@click.group()
def main() -> None:
    """kitap: the city library network (edge nodes, cloud, machine simulator)."""


@main.command()
@click.option("--db", "database_url", default="sqlite:///kitap-cloud.db", show_default=True,
              help="Database URL: sqlite:///path or postgresql://user@host/db.")
@click.option("--broker", default="127.0.0.1:1883", show_default=True, help="MQTT host:port.")
@click.option("--http", "http", default="127.0.0.1:8100", show_default=True,
              help="Where to serve the overview page and API.")
@click.option("--shared", is_flag=True,
              help="Use an MQTT 5 shared subscription (several ingest processes).")
@click.option("-v", "--verbose", is_flag=True)
def cloud(database_url: str, broker: str, http: str, shared: bool, verbose: bool) -> None:
    """Run the cloud: ingest of every node's events, store, and web."""
    from cloud.app import create_app, shutdown

    setup_logging(verbose)
    mhost, mport = split_hostport(broker, 1883)
    app = create_app({"DATABASE_URL": database_url, "MQTT_HOST": mhost, "MQTT_PORT": mport,
                      "SHARED_SUBSCRIPTION": shared})
    host, port = split_hostport(http, 8100)
    run(app, host, port, shutdown)


@main.command()
@click.option("--node", required=True, help="This node's id, e.g. m-almaly or b-central.")
@click.option("--kind", type=click.Choice(["machine", "branch"]), required=True)
@click.option("--db", "database", required=True, help="Path of this node's SQLite file.")
@click.option("--broker", default="127.0.0.1:1883", show_default=True, help="MQTT host:port.")
@click.option("--http", "http", default="127.0.0.1:8101", show_default=True)
@click.option("--serial", "serial_port", default=None,
              help="The machine controller: a device path (e.g. a pty) or a pyserial URL.")
@click.option("-v", "--verbose", is_flag=True)
def edge(node: str, kind: str, database: str, broker: str, http: str,
         serial_port: str | None, verbose: bool) -> None:
    """Run one edge node (a vending machine or a branch)."""
    from edge.app import create_app, shutdown

    setup_logging(verbose)
    if kind == "machine" and not serial_port:
        raise click.UsageError("a machine needs --serial (its controller's port)")
    mhost, mport = split_hostport(broker, 1883)
    app = create_app({"NODE_ID": node, "NODE_KIND": kind, "DATABASE": database,
                      "MQTT_HOST": mhost, "MQTT_PORT": mport, "SERIAL_PORT": serial_port})
    host, port = split_hostport(http, 8101)
    run(app, host, port, shutdown)


@main.command()
@click.option("--duration", type=float, default=None,
              help="Stop by itself after this many seconds and print a summary "
                   "(default: run until Ctrl-C).")
@click.option("--workdir", default=".demo", show_default=True,
              help="Where the demo keeps its databases, logs and sockets (wiped at start).")
@click.option("--pace", type=float, default=1.0, show_default=True,
              help="Reader actions per second.")
@click.option("--seed", type=int, default=7, show_default=True)
def demo(duration: float | None, workdir: str, pace: float, seed: int) -> None:
    """Run a small live network on this machine: broker, cloud, 2 machines, 1 branch."""
    from kitap.demo import run_demo

    run_demo(duration=duration, workdir=workdir, pace=pace, seed=seed)


main.add_command(firmware_sim_command, "firmware-sim")
