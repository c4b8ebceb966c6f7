"""The ``kitap`` command: one subcommand per process, plus the demo."""
from __future__ import annotations

from typing import Any

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
@click.option("--credentials", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The cloud.env file written by `kitap provision`.")
@click.option("-v", "--verbose", is_flag=True)
def cloud(database_url: str, broker: str, http: str, shared: bool, credentials: str | None,
          verbose: bool) -> None:
    """Run the cloud: ingest of every node's events, store, and web."""
    from cloud.app import create_app, shutdown

    setup_logging(verbose)
    mhost, mport = split_hostport(broker, 1883)
    app = create_app({"DATABASE_URL": database_url, "MQTT_HOST": mhost, "MQTT_PORT": mport,
                      "SHARED_SUBSCRIPTION": shared, **_credentials(credentials)})
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
@click.option("--credentials", type=click.Path(exists=True, dir_okay=False), default=None,
              help="This node's .env file written by `kitap provision`.")
@click.option("-v", "--verbose", is_flag=True)
def edge(node: str, kind: str, database: str, broker: str, http: str,
         serial_port: str | None, credentials: str | None, verbose: bool) -> None:
    """Run one edge node (a vending machine or a branch)."""
    from edge.app import create_app, shutdown

    setup_logging(verbose)
    if kind == "machine" and not serial_port:
        raise click.UsageError("a machine needs --serial (its controller's port)")
    mhost, mport = split_hostport(broker, 1883)
    app = create_app({"NODE_ID": node, "NODE_KIND": kind, "DATABASE": database,
                      "MQTT_HOST": mhost, "MQTT_PORT": mport, "SERIAL_PORT": serial_port,
                      **_credentials(credentials)})
    host, port = split_hostport(http, 8101)
    run(app, host, port, shutdown)


@main.command()
@click.option("--duration", type=float, default=600.0, show_default=True,
              help="Seconds of readers and faults before healing and judging.")
@click.option("--workdir", default=".chaos", show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
def chaos(duration: float, workdir: str, seed: int) -> None:
    """Run a network under random faults, heal it, and judge it against an oracle."""
    from pathlib import Path

    from kitap.chaos import run_chaos

    verdict = run_chaos(duration, Path(workdir).resolve(), seed)
    raise SystemExit(0 if verdict.ok else 1)


@main.command("backup")
@click.option("--db", "database_url", required=True, help="The cloud's database URL.")
@click.argument("out", type=click.Path(dir_okay=False))
def backup_cmd(database_url: str, out: str) -> None:
    """Back up the cloud's database while it runs (a consistent snapshot)."""
    from pathlib import Path

    from cloud.backup import BackupError, backup

    try:
        backup(database_url, Path(out))
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"backed up to {out}")


@main.command("restore")
@click.option("--db", "database_url", required=True, help="Where to restore (cloud stopped).")
@click.option("--force", is_flag=True, help="Replace an existing SQLite database.")
@click.argument("backup_file", type=click.Path(exists=True, dir_okay=False))
def restore_cmd(database_url: str, force: bool, backup_file: str) -> None:
    """Restore a backup; the nodes then send again what the backup lacks."""
    from pathlib import Path

    from cloud.backup import BackupError, restore

    try:
        restore(Path(backup_file), database_url, force=force)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"restored {backup_file}; start the cloud: nodes will resend what it lacks")


def _credentials(path: str | None) -> dict[str, str]:
    """MQTT_USERNAME / MQTT_PASSWORD from a `kitap provision` .env file."""
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        fields = dict(line.strip().split("=", 1) for line in f if "=" in line)
    return {"MQTT_USERNAME": fields["KITAP_MQTT_USERNAME"],
            "MQTT_PASSWORD": fields["KITAP_MQTT_PASSWORD"]}


@main.command()
@click.option("--dir", "out", required=True, type=click.Path(file_okay=False),
              help="Where to write the credentials (keep it out of the repository).")
@click.argument("nodes", nargs=-1, required=True)
def provision(out: str, nodes: tuple[str, ...]) -> None:
    """Give each node (and the cloud) its own MQTT login, and write the broker's access list."""
    from pathlib import Path

    from kitap.provision import provision as do_provision

    try:
        creds = do_provision(Path(out), list(nodes))
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{len(creds)} logins in {out}/ (passwd, acl, mosquitto.conf, one .env per user)")
    click.echo(f"broker: add the lines of {out}/mosquitto.conf to its configuration")


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


@main.group()
@click.option("--db", "database_url", default="sqlite:///kitap-cloud.db", show_default=True,
              help="The cloud's database URL.")
@click.pass_context
def admin(ctx: click.Context, database_url: str) -> None:
    """Staff decisions in the cloud; every node learns them through the feed."""
    from cloud import store

    store.connect(database_url)
    ctx.call_on_close(store.db.close)


def _act(fn: Any, *args: Any) -> None:
    from cloud.actions import ActionError

    try:
        fn(*args)
    except ActionError as exc:
        raise click.ClickException(str(exc)) from exc


@admin.command()
@click.argument("card")
@click.option("--reason", required=True, help="Shown to the reader and to staff.")
def block(card: str, reason: str) -> None:
    """Block a reader everywhere."""
    from cloud import actions

    _act(actions.block, card, reason)
    click.echo(f"blocked {card}: {reason}")


@admin.command()
@click.argument("card")
def unblock(card: str) -> None:
    """Lift a reader's block everywhere."""
    from cloud import actions

    _act(actions.unblock, card)
    click.echo(f"unblocked {card}")


@admin.command()
@click.argument("card")
@click.argument("title_id")
@click.argument("pickup_node")
def hold(card: str, title_id: str, pickup_node: str) -> None:
    """Reserve a title for a reader, to collect at a machine or branch."""
    from cloud import actions

    try:
        h = actions.place_hold(card, title_id, pickup_node)
    except actions.ActionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"hold {h.id}: {h.status}" + (f", copy {h.copy} set aside" if h.copy else ""))


@admin.command()
@click.argument("key")
@click.argument("value")
def setting(key: str, value: str) -> None:
    """Set a network-wide setting (offline_cap_after_hours, offline_cap_loans)."""
    from cloud import actions

    _act(actions.set_setting, key, value)
    click.echo(f"{key} = {value}")


@admin.command()
@click.argument("item_type")
@click.argument("category")
@click.option("--loan-days", type=int, required=True)
@click.option("--max-items", type=int, required=True)
@click.option("--renewals", type=int, required=True)
def policy(item_type: str, category: str, loan_days: int, max_items: int,
           renewals: int) -> None:
    """Set a loan policy row ("*" for any item type or category)."""
    from cloud import actions

    _act(actions.set_policy, item_type, category, loan_days, max_items, renewals)
    click.echo(f"policy {item_type}/{category}: {loan_days} days, {max_items} items, "
               f"{renewals} renewals")


@main.group()
@click.option("--db", "database", required=True, help="The edge node's SQLite file.")
@click.pass_context
def staff(ctx: click.Context, database: str) -> None:
    """Desk logins at an edge node."""
    from edge import store

    store.open_db(database)
    ctx.call_on_close(store.db.close)


@staff.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(["librarian", "manager"]), default="librarian")
@click.password_option(help="Asked for when not given (at least 8 characters).")
def staff_add(username: str, role: str, password: str) -> None:
    """Create a staff login, or reset its password."""
    from edge import auth

    try:
        auth.add_staff(username, password, role)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"staff {username} ({role}) saved")


main.add_command(firmware_sim_command, "firmware-sim")
