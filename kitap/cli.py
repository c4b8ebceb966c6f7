"""The ``kitap`` command: one subcommand per process, plus the demo."""
from __future__ import annotations

from typing import Any

import click

from firmware_sim.cli import command as firmware_sim_command
from firmware_sim.ctl import command as firmware_sim_ctl_command
from kitap import admin_cloud
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
@click.option("--sip2", "sip2", default=None, metavar="HOST:PORT",
              help="Serve SIP2 to self-check kiosks here (docs/sip2.md); port 6001 if omitted.")
@click.option("--sip2-tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM certificate: SIP2 over TLS.")
@click.option("--sip2-tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM private key of --sip2-tls-cert (if not in the same file).")
@click.option("--sip2-status-before-login", is_flag=True,
              help="Answer 99 SC Status before a login (for RFID gates that poll first).")
@click.option("-v", "--verbose", is_flag=True)
def edge(node: str, kind: str, database: str, broker: str, http: str,
         serial_port: str | None, credentials: str | None, sip2: str | None,
         sip2_tls_cert: str | None, sip2_tls_key: str | None, sip2_status_before_login: bool,
         verbose: bool) -> None:
    """Run one edge node (a vending machine or a branch)."""
    from edge.app import create_app, shutdown

    setup_logging(verbose)
    if kind == "machine" and not serial_port:
        raise click.UsageError("a machine needs --serial (its controller's port)")
    if (sip2_tls_cert or sip2_tls_key or sip2_status_before_login) and not sip2:
        raise click.UsageError("--sip2-tls-cert/--sip2-tls-key/--sip2-status-before-login "
                               "need --sip2 HOST:PORT")
    mhost, mport = split_hostport(broker, 1883)
    sip2_config: dict[str, Any] = {}
    if sip2:
        shost, sport = split_hostport(sip2, 6001)
        sip2_config = {"SIP2_HOST": shost, "SIP2_PORT": sport, "SIP2_TLS_CERT": sip2_tls_cert,
                       "SIP2_TLS_KEY": sip2_tls_key,
                       "SIP2_STATUS_BEFORE_LOGIN": sip2_status_before_login}
    app = create_app({"NODE_ID": node, "NODE_KIND": kind, "DATABASE": database,
                      "MQTT_HOST": mhost, "MQTT_PORT": mport, "SERIAL_PORT": serial_port,
                      **_credentials(credentials), **sip2_config})
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


@admin.command()
@click.argument("card")
@click.option("--reason", required=True, help="Shown to the reader and to staff.")
def block(card: str, reason: str) -> None:
    """Block a reader everywhere."""
    from cloud import actions

    admin_cloud.act(actions.block, card, reason, action="reader.block",
                    target=f"reader:{card}", detail=reason)
    click.echo(f"blocked {card}: {reason}")


@admin.command()
@click.argument("card")
def unblock(card: str) -> None:
    """Lift a reader's block everywhere."""
    from cloud import actions

    admin_cloud.act(actions.unblock, card, action="reader.unblock", target=f"reader:{card}")
    click.echo(f"unblocked {card}")


@admin.command()
@click.argument("card")
@click.argument("title_id")
@click.argument("pickup_node")
def hold(card: str, title_id: str, pickup_node: str) -> None:
    """Reserve a title for a reader, to collect at a machine or branch."""
    from cloud import actions

    h = admin_cloud.act(actions.place_hold, card, title_id, pickup_node, action="hold.place",
                        target=f"reader:{card}", node=pickup_node,
                        detail=lambda h: f"{title_id} at {pickup_node} ({h.id})")
    click.echo(f"hold {h.id}: {h.status}" + (f", copy {h.copy} set aside" if h.copy else ""))


@admin.command()
@click.argument("key")
@click.argument("value")
def setting(key: str, value: str) -> None:
    """Set a setting (offline_cap_loans, ...); cloud.* keys stay in the cloud (settings.py)."""
    from cloud import actions

    admin_cloud.act(actions.set_setting, key, value, action="setting.set",
                    target=f"setting:{key}", detail=value)
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

    admin_cloud.act(actions.set_policy, item_type, category, loan_days, max_items, renewals,
                    action="policy.set", target=f"policy:{item_type}/{category}",
                    detail=f"{loan_days} days, {max_items} items, {renewals} renewals")
    click.echo(f"policy {item_type}/{category}: {loan_days} days, {max_items} items, "
               f"{renewals} renewals")


@admin.command("staff-add")
@click.argument("username")
@click.option("--role", type=click.Choice(["administrator", "operator", "branch_staff"]),
              required=True)
@click.option("--branch", default=None, help="The branch node a branch_staff login acts for.")
@click.option("--name", default="", help="The person's full name, as the console shows it.")
@click.password_option(envvar="KITAP_STAFF_PASSWORD",
                       help="Asked for when not given (at least 10 characters).")
def staff_add_cloud(username: str, role: str, branch: str | None, name: str,
                    password: str) -> None:
    """Create an ops console login (or reset its password, role and branch)."""
    from cloud import accounts, audit
    from cloud import store as cs

    try:
        with cs.db.atomic():
            user = accounts.add_staff(username, password, role, branch, name)
            audit.record_cli("staff.save", f"staff:{username}", f"role {role}",
                             node=user.branch)
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"console login {username} ({role}{', ' + branch if branch else ''}) saved")


@admin.command("marc-import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def marc_import(path: str) -> None:
    """Import a MARC 21 file (ISO 2709 or MARCXML) into the catalogue."""
    from pathlib import Path

    from cloud import audit, marc
    from cloud import store as cs

    file = Path(path)
    with click.progressbar(length=file.stat().st_size, label=f"importing {file.name}",
                           show_pos=False, show_percent=True) as bar:
        seen = [0]

        def progress(done: int, total: int, records: int) -> None:
            bar.update(done - seen[0])
            seen[0] = done

        result = marc.import_file(file, progress)
    summary = (f"{result.records} records: {result.created} new titles, {result.updated} "
               f"updated, {result.errors} skipped")
    # The import commits batch by batch; its entry follows the last one.
    with cs.db.atomic():
        audit.record_cli("marc.import", f"file:{file.name}", summary)
    click.echo(summary)
    for line in result.messages:
        click.echo(f"  {line}")


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


@main.group("sip2-account")
@click.option("--db", "database", required=True, help="The edge node's SQLite file.")
@click.pass_context
def sip2_account(ctx: click.Context, database: str) -> None:
    """Self-check kiosks allowed to speak SIP2 to an edge node, and the cards they blocked."""
    from edge import store
    from edge.sip2 import accounts

    store.open_db(database)
    accounts.init_tables()
    ctx.call_on_close(store.db.close)


@sip2_account.command("add")
@click.argument("name")
@click.option("--institution", required=True, help="The institution id (AO) kiosks send.")
@click.option("--location", default="", help="Where the kiosk stands (AN, CT).")
@click.option("--library-name", default="", help="AM in the status message.")
@click.option("--allow", default=None, metavar="CODES",
              help="Messages it may send, e.g. 23,63,11,09,17 (default: every supported one).")
@click.option("--alerts/--no-alerts", default=True, show_default=True,
              help="Check-in alerts for sorters (hold, transfer).")
@click.option("--charset", type=click.Choice(["utf-8", "cp850"]), default="utf-8",
              show_default=True)
@click.option("--pin", "pin_policy", type=click.Choice(["required", "optional"]),
              default="optional", show_default=True, help="Must readers enter their PIN?")
@click.option("--utc-dates", is_flag=True, help="Dates in UTC instead of local time.")
@click.option("--sort-bin", "sort_bins", multiple=True, metavar="KIND=BIN",
              help="Sort bin (CL) for shelf, hold or transfer, e.g. --sort-bin transfer=3.")
@click.option("--online-status", type=click.Choice(["link", "always"]), default="link",
              show_default=True, help="98 on-line status: the cloud link, or always Y.")
@click.password_option(help="Asked for when not given (at least 8 characters).")
def sip2_account_add(name: str, institution: str, location: str, library_name: str,
                     allow: str | None, alerts: bool, charset: str, pin_policy: str,
                     utc_dates: bool, sort_bins: tuple[str, ...], online_status: str,
                     password: str) -> None:
    """Create a kiosk's SIP2 login (or replace it)."""
    from edge.sip2 import accounts

    try:
        if any("=" not in b for b in sort_bins):
            raise ValueError("--sort-bin takes KIND=BIN, e.g. transfer=3")
        bins = dict(b.split("=", 1) for b in sort_bins)
        acct = accounts.add_account(
            name, password, institution=institution, location=location,
            library_name=library_name,
            allowed=[c.strip() for c in allow.split(",") if c.strip()] if allow else None,
            alerts=alerts, charset=charset, pin_policy=pin_policy, utc_dates=utc_dates,
            sort_bins=bins, online_status=online_status)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"kiosk {acct.name} saved: institution {acct.institution}, "
               f"messages {','.join(sorted(acct.allowed))}")


@sip2_account.command("list")
def sip2_account_list() -> None:
    """List the kiosk logins."""
    from edge.sip2 import accounts

    for a in accounts.list_accounts():
        click.echo(f"{a.name}\t{a.institution}\t{a.location}\t{a.charset}\t"
                   f"alerts={'on' if a.alerts else 'off'}\t{','.join(sorted(a.allowed))}")


@sip2_account.command("remove")
@click.argument("name")
def sip2_account_remove(name: str) -> None:
    """Delete a kiosk login."""
    from edge.sip2 import accounts

    if not accounts.remove_account(name):
        raise click.ClickException(f"no kiosk {name}")
    click.echo(f"kiosk {name} removed")


@sip2_account.command("blocks")
def sip2_account_blocks() -> None:
    """Cards blocked by kiosks at this node (01 Block Patron)."""
    from edge.sip2 import accounts

    for b in accounts.list_blocks():
        click.echo(f"{b.card}\t{b.blocked_at:%Y-%m-%d %H:%M}\t{b.reason}")


@sip2_account.command("lift-block")
@click.argument("card")
@click.option("--node", required=True, help="This node's id (the event to the cloud names it).")
@click.option("--by", default="staff", show_default=True, help="Who lifts it (in the event).")
def sip2_account_lift_block(card: str, node: str, by: str) -> None:
    """Lift a self-check's block on a card, here and (by an event) everywhere.

    The library's blocks are lifted in the cloud, with `kitap admin unblock`.
    """
    from edge import store
    from edge.sip2 import accounts

    es = store.EdgeStore(node, store.db.database)
    with es.writing():
        lifted = accounts.lift_block(es, card, by)
    if not lifted:
        raise click.ClickException(f"no self-check block on {card}")
    click.echo(f"self-check block on {card} lifted; the cloud is told when {node} is linked")


main.add_command(firmware_sim_command, "firmware-sim")
main.add_command(firmware_sim_ctl_command, "firmware-sim-ctl")
admin_cloud.register(admin)
