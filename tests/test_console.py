"""The ops console through Flask's test client over a month of seeded history: logins,
CSRF, roles, reader actions that reach the feed and the audit trail, the lists and
their CSV, and the read-only notice while the database is busy."""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud import store as cs
from tests import console_data as cd
from tests.conftest import TOKEN


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The seeded month, made once per module; each test gets a copy."""
    path = tmp_path_factory.mktemp("console") / "cloud.db"
    handles = cd.seed(path)
    return {"path": path, **handles}


@pytest.fixture
def env(template_db: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A cloud app (no MQTT) over a fresh copy of the seeded database."""
    from cloud.app import create_app

    db = tmp_path / "cloud.db"
    shutil.copy(template_db["path"], db)
    app = create_app({"DATABASE_URL": f"sqlite:///{db}", "START_CONSUMER": False,
                      "TESTING": True, "API_TOKEN": TOKEN})
    yield {"app": app, "db": db, **template_db}
    cs.db.close()


def csrf(client: Any, url: str) -> str:
    """The CSRF token a page's forms carry."""
    page = client.get(url)
    match = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True))
    assert match, f"no form token on {url}"
    return match.group(1)


def new_client(app: Any) -> Any:
    """A test client that reads the pages in English."""
    client = app.test_client()
    client.set_cookie("lang", "en")
    return client


def login(app: Any, user: tuple[str, str]) -> tuple[Any, str]:
    """A test client logged in to the console, and its CSRF token."""
    client = new_client(app)
    token = csrf(client, "/console/login")
    r = client.post("/console/login", data={"username": user[0], "password": user[1],
                                            "csrf": token})
    assert r.status_code == 302, r.get_data(as_text=True)
    return client, csrf(client, "/console/")


def test_login_needs_the_password_and_the_form_token_and_pauses_a_guesser(env) -> None:
    client = new_client(env["app"])
    r = client.get("/console/debtors")
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    # A form without this session's token is refused whatever it carries.
    r = client.post("/console/login", data={"username": cd.ADMIN[0], "password": cd.ADMIN[1]})
    assert r.status_code == 400
    token = csrf(client, "/console/login")
    for _ in range(5):
        r = client.post("/console/login", data={"username": cd.ADMIN[0], "password": "nope",
                                                "csrf": token})
        assert r.status_code == 401
    r = client.post("/console/login", data={"username": cd.ADMIN[0], "password": cd.ADMIN[1],
                                            "csrf": token})
    assert r.status_code == 401 and "Too many" in r.get_data(as_text=True)
    # Another login is not paused by someone guessing the first one's password.
    client2, _ = login(env["app"], cd.OPERATOR)
    assert client2.get("/console/").status_code == 200


def test_branch_staff_reach_no_admin_page_and_act_only_for_their_branch(env) -> None:
    client, token = login(env["app"], cd.BRANCH)
    for url in ("/console/staff", "/console/import", "/console/audit"):
        assert client.get(url).status_code == 403, url
    page = client.get("/console/").get_data(as_text=True)
    assert "/console/staff" not in page and "/console/import" not in page
    # Another branch's exception, hold, loan and reader-wide decisions are refused...
    jam = cs.StaffException.get(cs.StaffException.kind == "device_fault.jam")
    r = client.post(f"/console/exceptions/{jam.id}/close",
                    data={"resolution": "fixed", "csrf": token})
    assert r.status_code == 403
    assert cs.StaffException.get_by_id(jam.id).closed_at is None
    other = cs.Hold.select().where(cs.Hold.pickup_node != "b-central",
                                   cs.Hold.status.in_(["waiting", "ready"])).first()
    assert client.post(f"/console/holds/{other.id}/cancel",
                       data={"csrf": token}).status_code == 403
    assert cs.Hold.get_by_id(other.id).status in ("waiting", "ready")
    loan = cs.Loan.select().where(cs.Loan.returned_at.is_null(),
                                  cs.Loan.node == "m-almaly").first()
    r = client.post(f"/console/readers/{loan.reader}/extend",
                    data={"loan": loan.id, "days": "14", "csrf": token})
    assert r.status_code == 403
    assert cs.Loan.get_by_id(loan.id).due == loan.due
    card = env["data"].readers[0].card
    assert client.post(f"/console/readers/{card}/block",
                       data={"reason": "x", "csrf": token}).status_code == 403
    assert cs.Reader.get_by_id(card).blocked_reason is None
    # ...while their own branch's are theirs.
    mine = cs.StaffException.create(kind="card_issued_twice", node="b-central", seq=9,
                                    detail="two cards", created_at=cs.utcnow())
    r = client.post(f"/console/exceptions/{mine.id}/close",
                    data={"resolution": "merged the readers", "csrf": token})
    assert r.status_code == 302
    assert "merged the readers" in cs.StaffException.get_by_id(mine.id).resolution
    # Operators run the network but do not manage logins nor read the audit trail.
    op, _ = login(env["app"], cd.OPERATOR)
    for url in ("/console/staff", "/console/audit"):
        assert op.get(url).status_code == 403, url
    assert "/console/audit" not in op.get("/console/").get_data(as_text=True)
    admin, _ = login(env["app"], cd.ADMIN)
    assert admin.get("/console/audit").status_code == 200


def test_reader_actions_reach_the_feed_and_the_audit_trail(env) -> None:
    client, token = login(env["app"], cd.OPERATOR)
    debtor = env["debtors"][0]
    rev = cs.Change.select().count()
    r = client.post(f"/console/readers/{debtor.card}/block",
                    data={"reason": "lost card", "csrf": token})
    assert r.status_code == 302
    assert cs.Reader.get_by_id(debtor.card).blocked_reason == "lost card"
    change = cs.Change.select().where(cs.Change.entity == "reader",
                                      cs.Change.key == debtor.card).order_by(
        cs.Change.rev.desc()).first()
    assert change.rev > rev and json.loads(change.data)["blocked_reason"] == "lost card"
    owed = cs.Reader.get_by_id(debtor.card).fees_owed
    client.post(f"/console/readers/{debtor.card}/waive",
                data={"amount": "10,50", "reason": "first time", "csrf": token})
    assert cs.Reader.get_by_id(debtor.card).fees_owed == owed - 1050
    loan = cs.Loan.select().where(cs.Loan.reader == debtor.card,
                                  cs.Loan.returned_at.is_null()).first()
    client.post(f"/console/readers/{debtor.card}/extend",
                data={"loan": loan.id, "days": "7", "csrf": token})
    from cloud import settings
    assert cs.Loan.get_by_id(loan.id).due == max(loan.due, settings.today()) + timedelta(days=7)
    title = env["data"].titles[5].id
    client.post(f"/console/readers/{debtor.card}/hold",
                data={"title": title, "pickup": "b-central", "csrf": token})
    hold = cs.Hold.get(cs.Hold.reader == debtor.card, cs.Hold.title_id == title)
    assert cs.Change.select().where(cs.Change.entity == "hold", cs.Change.key == hold.id,
                                    cs.Change.scope == "b-central").exists()
    client.post(f"/console/holds/{hold.id}/cancel", data={"csrf": token})
    assert cs.Hold.get_by_id(hold.id).status == "cancelled"
    client.post(f"/console/readers/{debtor.card}/unblock", data={"csrf": token})
    assert cs.Reader.get_by_id(debtor.card).blocked_reason is None
    trail = [(e.actor, e.action) for e in cs.AuditEntry.select().where(
        cs.AuditEntry.target == f"reader:{debtor.card}").order_by(cs.AuditEntry.id)]
    assert trail == [(cd.OPERATOR[0], a) for a in ("reader.block", "reader.waive",
                                                   "loan.extend", "hold.place",
                                                   "hold.cancel", "reader.unblock")]
    page = client.get(f"/console/readers/{debtor.card}").get_data(as_text=True)
    assert "reader.waive" in page and debtor.name in page


def test_the_json_api_answers_operators_and_the_token_only(env) -> None:
    copy = cs.Copy.select().where(cs.Copy.status == "on_loan").first().barcode
    urls = ("/api/loans/open", "/api/summary", f"/api/copies/{copy}")
    anonymous = new_client(env["app"])
    for url in urls:
        r = anonymous.get(url)
        assert r.status_code == 401 and "API token" in r.get_json()["message"], url
        assert anonymous.get(url, headers={"Authorization": "Bearer guess"}).status_code == 401
        assert anonymous.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code \
            == 200, url
    # Branch staff see the network in numbers, not every branch's readers.
    branch, _ = login(env["app"], cd.BRANCH)
    for url in urls[::2]:
        r = branch.get(url)
        assert r.status_code == 403 and r.get_json()["message"], url
    assert branch.get("/api/summary").status_code == 200
    operator, _ = login(env["app"], cd.OPERATOR)
    loans = operator.get("/api/loans/open").get_json()
    assert {(ln["copy"], ln["reader"]) for ln in loans} == set(
        cs.Loan.select(cs.Loan.copy, cs.Loan.reader).where(cs.Loan.returned_at.is_null())
        .tuples())
    assert operator.get(f"/api/copies/{copy}").get_json()["status"] == "on_loan"
    spec = anonymous.get("/api/openapi.json").get_json()
    assert spec["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"
    assert {"401", "403"} <= set(spec["paths"]["/api/loans/open"]["get"]["responses"])


def test_debtors_and_overdue_lists_filter_and_export_csv(env) -> None:
    client, _ = login(env["app"], cd.OPERATOR)
    r = client.get("/console/debtors?node=m-mega&format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    text = r.get_data(as_text=True)
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    expected = {ln.reader for ln in cs.Loan.select().where(
        cs.Loan.node == "m-mega", cs.Loan.returned_at.is_null(),
        cs.Loan.due < cs.utcnow().date())}
    assert {row["card"] for row in rows} == expected and expected
    assert all("m-mega" in row["locations"].split() for row in rows)
    # Owing at least 200 tenge: only the debtors whose fines reach it.
    rows = list(csv.DictReader(io.StringIO(client.get(
        "/console/debtors?amount=200&format=csv").get_data(as_text=True).lstrip("\ufeff"))))
    owed = {r.card: r.fees_owed for r in cs.Reader.select()}
    assert rows and all(owed[row["card"]] >= 20000 for row in rows)
    assert {row["card"] for row in rows} == {c for c, o in owed.items() if o >= 20000}
    # Overdue loans at least 35 days late, longest first.
    rows = list(csv.DictReader(io.StringIO(client.get(
        "/console/overdue?days=35&format=csv").get_data(as_text=True).lstrip("\ufeff"))))
    days = [int(row["days_overdue"]) for row in rows]
    assert days and min(days) >= 35 and days == sorted(days, reverse=True)
    assert cs.AuditEntry.select().where(cs.AuditEntry.action == "export").count() == 3


def test_branch_staff_lists_are_their_branchs_and_refusals_speak_the_staffs_language(
        env) -> None:
    branch, token = login(env["app"], cd.BRANCH)
    text = branch.get("/console/debtors?format=csv").get_data(as_text=True).lstrip("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and all("b-central" in row["locations"].split() for row in rows)
    assert len(rows) < len(list(csv.DictReader(io.StringIO(login(env["app"], cd.OPERATOR)[0].get(
        "/console/debtors?format=csv").get_data(as_text=True).lstrip("\ufeff")))))
    assert branch.get("/console/debtors?node=m-mega&format=csv").status_code == 403
    assert branch.get("/console/overdue?node=m-mega").status_code == 403
    overdue = branch.get("/console/overdue?format=csv").get_data(as_text=True)
    assert {row["location"] for row in csv.DictReader(io.StringIO(overdue.lstrip("\ufeff")))} \
        == {"b-central"}
    # A refused action is told in the staff member's language, not in the code's English.
    card = env["data"].readers[5].card
    branch.set_cookie("lang", "ru")
    r = branch.post(f"/console/readers/{card}/hold", follow_redirects=True,
                    data={"title": "T99999", "pickup": "b-central", "csrf": token})
    page = r.get_data(as_text=True)
    assert "Такого издания нет в каталоге." in page and "no title" not in page
    # A number of days that is no number is refused with a reason, and nothing moves.
    loan = cs.Loan.select().where(cs.Loan.returned_at.is_null(),
                                  cs.Loan.node == "b-central").first()
    for days in ("abc", "0", "400"):
        r = branch.post(f"/console/readers/{loan.reader}/extend",
                        data={"loan": loan.id, "days": days, "csrf": token})
        assert r.status_code == 400 and "от 1 до 60" in r.get_data(as_text=True), days
    assert cs.Loan.get_by_id(loan.id).due == loan.due


def test_pages_stay_readable_and_changes_wait_while_the_database_is_busy(env) -> None:
    client, token = login(env["app"], cd.OPERATOR)
    card = env["data"].readers[3].card
    locker = sqlite3.connect(env["db"], timeout=1)
    locker.execute("BEGIN IMMEDIATE")   # ingest holding the write lock for a long batch
    try:
        r = client.post(f"/console/readers/{card}/block", follow_redirects=True,
                        data={"reason": "test", "csrf": token,
                              "next": f"/console/readers/{card}"})
        page = r.get_data(as_text=True)
        assert r.status_code == 200
        assert "Nothing was changed: the database is busy" in page
        assert "changes are paused" in page          # the read-only notice
        assert re.search(r"<fieldset\s+disabled", page)
        assert client.get("/console/debtors").status_code == 200
    finally:
        locker.rollback()
        locker.close()
    assert cs.Reader.get_by_id(card).blocked_reason is None
    r = client.post(f"/console/readers/{card}/block", data={"reason": "test", "csrf": token},
                    follow_redirects=True)
    assert "changes are paused" not in r.get_data(as_text=True)
    assert cs.Reader.get_by_id(card).blocked_reason == "test"


def test_the_overview_puts_problem_nodes_first(env) -> None:
    from cloud.console import network

    now = cs.utcnow()
    status = {"v": 1, "online": True, "outbox_depth": 0, "faults": []}
    for node, online, seen in (("b-central", True, now), ("m-almaly", True, now),
                               ("m-mega", True, now - timedelta(minutes=5)),
                               ("b-zhetisu", False, now - timedelta(hours=2))):
        cs.Node.update(online=online, last_seen=seen,
                       status=json.dumps({**status, "node": node, "online": online})).where(
            cs.Node.id == node).execute()
    rows = {r.id: r for r in network.node_rows(now)}
    assert rows["b-zhetisu"].state == "offline"
    assert rows["m-mega"].problems[0][0] == "n.p.silent"     # online, but quiet for 5 min
    assert rows["b-central"].state == "ok"
    client, _ = login(env["app"], cd.OPERATOR)
    page = client.get("/console/network/live").get_data(as_text=True)
    order = re.findall(r'data-node="([^"]+)"', page)
    assert order.index("b-central") > max(order.index("b-zhetisu"), order.index("m-mega"))


def test_a_machines_page_shows_its_bin_level_slots_and_faults(env) -> None:
    from cloud.console import network

    now = cs.utcnow()
    # As a machine node's retained status says (edge/sync.py, protocol StatusSchema).
    status = {"v": 1, "node": "m-almaly", "online": True, "kind": "machine",
              "outbox_depth": 0, "faults": ["bin_full"],
              "machine": {"controller_online": True, "slots": 36, "bin": 38,
                          "bin_capacity": 40, "returns_open": False, "door": "closed"}}
    cs.Node.update(online=True, last_seen=now, status=json.dumps(status)).where(
        cs.Node.id == "m-almaly").execute()
    # m-mega's controller has stopped answering, though the node itself is online.
    cs.Node.update(online=True, last_seen=now, status=json.dumps(
        {**status, "node": "m-mega", "faults": [],
         "machine": {**status["machine"], "controller_online": False, "bin": 3}})).where(
        cs.Node.id == "m-mega").execute()
    rows = {r.id: r for r in network.node_rows(now)}
    assert (rows["m-almaly"].bin_level, rows["m-almaly"].slot_count) == ("38/40", 36)
    assert rows["m-almaly"].faults == ["bin_full"] and rows["m-almaly"].state == "fault"
    assert ("n.p.controller", {}) in rows["m-mega"].problems

    client, _ = login(env["app"], cd.OPERATOR)
    page = client.get("/console/nodes/m-almaly").get_data(as_text=True)
    tile = page.split('id="bin-level"', 1)[1].split("</div>", 1)[0]
    assert "38/40" in tile and "return bin level" in tile
    assert re.search(r'<li class="mono">bin_full</li>', page)
    assert re.search(r"/36</span>", page)          # copies in slots / the controller's slots
    live = client.get("/console/network/live").get_data(as_text=True)
    row = live.split('data-node="m-almaly"', 1)[1].split("</tr>", 1)[0]
    assert "bin 38/40" in row and "36 slots" in row and "bin_full" in row
    mega = live.split('data-node="m-mega"', 1)[1].split("</tr>", 1)[0]
    assert "controller does not answer" in mega and "bin 3/40" in mega


def test_every_word_the_pages_use_exists_in_three_languages() -> None:
    from cloud import i18n
    from cloud.console import words  # noqa: F401 - registers the console's rows

    root = Path(__file__).resolve().parent.parent / "cloud"
    used = set()
    for f in [*root.glob("templates/**/*.html"), *root.glob("console/*.py"),
              root / "catalogue.py"]:
        used |= set(re.findall(r"""\bt[r]?\(["']([a-z0-9_.]+[a-z0-9_])["']""", f.read_text()))
    dynamic = [f"{p}{k}" for p, ks in (
        ("cat.", ("adult", "child", "student", "pensioner", "partner_staff", "supported")),
        ("cs.", ("in_slot", "on_shelf", "in_bin", "in_transit", "on_loan", "missing", "lost",
                 "withdrawn")),
        ("role.", ("administrator", "operator", "branch_staff")),
        ("h.", ("waiting", "ready", "picked_up", "expired", "cancelled")),
        ("led.", ("opening", "fine", "replacement", "payment", "waiver")),
        ("m.st.", ("running", "done", "failed", "stalled")), ("tr.", ("home", "hold")),
        ("login.", ("wrong", "locked", "disabled")), ("c.login.", ("wrong", "locked")),
        ("a.st.", ("pending", "completed", "cancelled")), ("lang.", ("kk", "ru", "en")),
        ("w.", ("machine", "branch")), ("st.dow.", tuple("0123456")),
        ("n.p.", ("never", "offline", "silent", "faults", "clock", "lag", "outbox",
                  "controller")),
        ("c.renew.", ("no_renewals_left", "reserved", "blocked")),
        ("j.bad.", ("name", "pin", "pin2", "year", "consent", "category", "branch")),
        ("s.bad.", ("role", "password", "username", "branch", "self")),
        ("a.bad.", ("card", "card_taken", "not_pending")),
        ("act.", ("refused", *re.findall(r'ActionError\([^"]*"[^"]*",\s*"([a-z_]+)"\)',
                                         (root / "actions.py").read_text()))))
        for k in ks]
    missing = sorted(k for k in used | set(dynamic) if not i18n.known(k))
    assert not missing
    for key in used:
        assert all(i18n.t(key, lang).strip() for lang in i18n.LANGS), key


def test_the_command_line_makes_console_logins(env) -> None:
    from click.testing import CliRunner

    from cloud import accounts
    from kitap.cli import main as cli

    url = f"sqlite:///{env['db']}"
    args = ["admin", "--db", url, "staff-add", "zhanar", "--role", "branch_staff",
            "--branch", "b-central", "--name", "Жанар Омарова", "--password", "long-password-1"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    cs.connect(url)
    user = accounts.staff_login("zhanar", "long-password-1")
    assert (user.role, user.branch, user.name) == ("branch_staff", "b-central", "Жанар Омарова")
    assert cs.AuditEntry.get(cs.AuditEntry.target == "staff:zhanar").actor == "cli"
    bad = CliRunner().invoke(cli, [*args[:6], "--branch", "nowhere", "--password", "x" * 12])
    assert bad.exit_code != 0 and "branch" in bad.output
    short = CliRunner().invoke(cli, [*args[:4], "someone", "--role", "operator",
                                     "--password", "short"])
    assert short.exit_code != 0 and "10 characters" in short.output


def test_every_page_and_an_action_on_postgresql() -> None:
    from cloud.app import create_app
    from tests.cloud_fixtures import pg_database

    with pg_database() as url:
        handles = cd.seed(url, copies=600, readers=60)
        app = create_app({"DATABASE_URL": url, "START_CONSUMER": False, "TESTING": True})
        try:
            client, token = login(app, cd.OPERATOR)
            debtor = handles["debtors"][0]
            copy = cs.Copy.select().first().barcode
            for page in ("/console/", "/console/network/live", "/console/nodes/m-mega",
                         "/console/nodes/b-central", "/console/inventory",
                         f"/console/copies/{copy}", "/console/locations/m-almaly",
                         "/console/debtors?node=m-mega&days=3&amount=10",
                         "/console/overdue?format=csv", f"/console/readers/{debtor.card}",
                         "/console/readers?q=a", "/console/exceptions", "/console/applications",
                         "/console/stats?days=30", "/console/stats?days=7&node=b-central",
                         "/console/restock", "/console/restock/m-mega",
                         "/catalogue/", "/catalogue/?q=абай", "/catalogue/titles/T00001"):
                assert client.get(page).status_code == 200, page
            from cloud.console import stats

            st = stats.compute(30)
            assert st.loans > 0 and sum(map(sum, st.hours)) > 0 and st.top_titles
            client.post(f"/console/readers/{debtor.card}/block",
                        data={"reason": "on postgres", "csrf": token})
            assert cs.Reader.get_by_id(debtor.card).blocked_reason == "on postgres"
            admin, _ = login(app, cd.ADMIN)
            trail = admin.get("/console/audit?action=reader.block").get_data(as_text=True)
            assert "on postgres" in trail
        finally:
            cs.db.close()


def test_operators_inspect_rejected_messages_beside_the_exceptions(env) -> None:
    now = cs.utcnow()
    for i, (node, reason) in enumerate([("x-ghost", "unknown node"),
                                        ("m-almaly", "not JSON: Expecting value"),
                                        ("m-almaly", "<script>alert(1)</script>")]):
        cs.RejectedMessage.create(topic=f"lib/v1/node/{node}/events", node=node, reason=reason,
                                  payload=f'[{{"seq": {i}}}]', received_at=now - timedelta(i))
    op, _ = login(env["app"], cd.OPERATOR)
    assert "/console/rejected" in op.get("/console/exceptions").get_data(as_text=True)
    page = op.get("/console/rejected").get_data(as_text=True)
    assert "unknown node" in page and "x-ghost" in page and '[{&#34;seq&#34;: 0}]' in page
    assert "<script>alert" not in page                     # shown, never run
    only = op.get("/console/rejected?node=m-almaly").get_data(as_text=True)
    assert "Expecting value" in only and "x-ghost</td>" not in only
    branch, _ = login(env["app"], cd.BRANCH)
    assert branch.get("/console/rejected").status_code == 403
    assert "/console/rejected" not in branch.get("/console/exceptions").get_data(as_text=True)


def test_the_debtors_page_names_payments_from_cards_nobody_registered(env) -> None:
    from cloud import debts

    debts.pay("N-unknown", 12_50, payment_id="P-orphan", node="b-central", now=cs.utcnow())
    client, _ = login(env["app"], cd.BRANCH)
    page = client.get("/console/debtors").get_data(as_text=True)
    orphans = page[page.index('id="orphans"'):]
    assert "N-unknown" in orphans and "12,50" in orphans
