"""The readers' catalogue through Flask's test client: search across case and script,
availability, a reader's own account and nobody else's, renewals by the rules, and
online pre-registration completed by the branch that issues the card."""
from __future__ import annotations

import re
from typing import Any

from cloud import catalogue_search
from cloud import store as cs
from tests import console_data as cd
from tests.test_console import csrf, env, login, new_client, template_db

__all__ = ["env", "template_db"]  # the fixtures this module borrows


def reader_login(app: Any, card: str, pin: str) -> tuple[Any, str]:
    """A test client signed in to the catalogue as a reader, and its CSRF token."""
    client = new_client(app)
    token = csrf(client, "/catalogue/login")
    r = client.post("/catalogue/login", data={"card": card, "pin": pin, "csrf": token})
    assert r.status_code == 302, r.get_data(as_text=True)
    return client, csrf(client, "/catalogue/account")


def test_search_finds_abai_whatever_the_case_or_script(env) -> None:
    for query in ("абай", "АБАЙ", "Абай", "abai", "Abay", "ABAI"):
        found = catalogue_search.search(query)
        assert "Абай жолы" in {t.title for t in found.titles}, query
        assert any("Абай" in t.author for t in found.titles), query  # his own works


def test_search_by_isbn_with_hyphens_and_by_author_in_latin(env) -> None:
    t = cs.Title.get(cs.Title.title == "Абай жолы")
    isbn = f"{t.isbn[:3]}-{t.isbn[3:6]}-{t.isbn[6:]}"
    assert [x.id for x in catalogue_search.search(isbn).titles] == [t.id]
    assert t.id in {x.id for x in catalogue_search.search("Auezov").titles}
    client = new_client(env["app"])
    page = client.get("/catalogue/?q=tolstoy").get_data(as_text=True)
    assert "Война и мир" in page and "Available now" in page


def test_a_reader_sees_and_changes_only_their_own_account(env) -> None:
    data = env["data"]
    me, other = data.readers[40], data.readers[41]
    from cloud import actions

    theirs = actions.place_hold(other.card, data.titles[7].id, "b-central")
    client, token = reader_login(env["app"], me.card, me.pin)
    title = data.titles[9]
    r = client.post(f"/catalogue/titles/{title.id}/reserve",
                    data={"pickup": "b-central", "csrf": token})
    assert r.status_code == 302
    mine = cs.Hold.get(cs.Hold.reader == me.card, cs.Hold.title_id == title.id)
    page = client.get("/catalogue/account").get_data(as_text=True)
    assert me.name in page and title.title in page
    assert other.name not in page and theirs.id not in page
    # Another reader's hold and loan answer as if they did not exist, and stay as they were.
    assert client.post(f"/catalogue/account/holds/{theirs.id}/cancel",
                       data={"csrf": token}).status_code == 404
    assert cs.Hold.get_by_id(theirs.id).status in ("waiting", "ready")
    loan = cs.Loan.select().where(cs.Loan.reader != me.card,
                                  cs.Loan.returned_at.is_null()).first()
    assert client.post(f"/catalogue/account/loans/{loan.id}/renew",
                       data={"csrf": token}).status_code == 404
    assert cs.Loan.get_by_id(loan.id).due == loan.due
    assert client.get(f"/catalogue/account?card={other.card}").get_data(
        as_text=True).count(other.name) == 0
    client.post(f"/catalogue/account/holds/{mine.id}/cancel", data={"csrf": token})
    assert cs.Hold.get_by_id(mine.id).status == "cancelled"
    assert cs.AuditEntry.select().where(cs.AuditEntry.actor == f"reader:{me.card}").count() == 2


def test_three_wrong_pins_lock_the_card_online(env) -> None:
    r = env["data"].readers[50]
    client = new_client(env["app"])
    token = csrf(client, "/catalogue/login")
    wrong = "0000" if r.pin != "0000" else "1111"
    for _ in range(3):
        resp = client.post("/catalogue/login", data={"card": r.card, "pin": wrong,
                                                     "csrf": token})
        assert resp.status_code == 401
    resp = client.post("/catalogue/login", data={"card": r.card, "pin": r.pin, "csrf": token})
    assert resp.status_code == 401 and "Too many" in resp.get_data(as_text=True)


def test_online_renewal_follows_the_desk_rules(env) -> None:
    debtor = next(d for d in env["debtors"] if not cs.Reader.get_by_id(d.card).blocked_reason)
    loan = cs.Loan.select().where(cs.Loan.reader == debtor.card,
                                  cs.Loan.returned_at.is_null()).first()
    client, token = reader_login(env["app"], debtor.card, debtor.pin)
    dues = []
    for _ in range(3):
        page = client.post(f"/catalogue/account/loans/{loan.id}/renew", data={"csrf": token},
                           follow_redirects=True).get_data(as_text=True)
        dues.append(cs.Loan.get_by_id(loan.id).due)
    assert dues[0] > loan.due and dues[1] == dues[0]      # from today: a second adds nothing
    assert "No renewals left" in page                      # the default policy allows 2
    # Another reader waiting for the title stops a renewal.
    other = next(c for c in cs.Loan.select().where(cs.Loan.reader == debtor.card,
                                                   cs.Loan.returned_at.is_null())
                 if c.id != loan.id) if cs.Loan.select().where(
        cs.Loan.reader == debtor.card, cs.Loan.returned_at.is_null()).count() > 1 else None
    if other is not None:
        from cloud import actions

        title = cs.Copy.get_by_id(other.copy).title_id
        actions.place_hold(env["data"].readers[60].card, title, "b-central")
        page = client.post(f"/catalogue/account/loans/{other.id}/renew", data={"csrf": token},
                           follow_redirects=True).get_data(as_text=True)
        assert "Another reader is waiting" in page
        assert cs.Loan.get_by_id(other.id).due == other.due


def test_join_online_then_the_branch_issues_the_card(env) -> None:
    client = new_client(env["app"])
    token = csrf(client, "/catalogue/join")
    form = {"name": "Әлия Бекова", "contact": "aliya@example.kz", "birth_year": "1999",
            "category": "student", "branch": "b-central", "pin": "4826", "pin2": "4826",
            "consent": "1", "csrf": token}
    assert client.post("/catalogue/join", data={**form, "pin2": "4827"}).status_code == 422
    r = client.post("/catalogue/join", data=form, follow_redirects=True)
    code = re.search(r'id="code">([A-Z0-9]{6})<', r.get_data(as_text=True)).group(1)
    pre = cs.PreRegistration.get_by_id(code)
    assert pre.status == "pending" and pre.branch == "b-central"
    # Staff of another branch cannot complete it; b-central's staff can.
    other_branch_app = cs.PreRegistration.create(
        id="ZZZZZ2", name="Someone Else", branch=cd.OTHER_BRANCH, created_at=cs.utcnow())
    staff, stoken = login(env["app"], cd.BRANCH)
    assert staff.post(f"/console/applications/{other_branch_app.id}/complete",
                      data={"card": "K0000099", "csrf": stoken}).status_code == 403
    page = staff.get("/console/applications").get_data(as_text=True)
    assert code in page and "Әлия Бекова" in page
    staff.post(f"/console/applications/{code}/complete",
               data={"card": "k0000777", "csrf": stoken})
    reader = cs.Reader.get_by_id("K0000777")
    assert (reader.name, reader.category, reader.registered_at) == (
        "Әлия Бекова", "student", "b-central")
    assert cs.Change.select().where(cs.Change.entity == "reader",
                                    cs.Change.key == "K0000777").exists()
    assert cs.PreRegistration.get_by_id(code).status == "completed"
    # The PIN chosen online opens the account at once.
    reader_login(env["app"], "K0000777", "4826")
    # A card number already issued is refused.
    second = cs.PreRegistration.create(id="YYYYY3", name="Second", branch="b-central",
                                       created_at=cs.utcnow())
    page = staff.post(f"/console/applications/{second.id}/complete",
                      data={"card": "K0000777", "csrf": stoken},
                      follow_redirects=True).get_data(as_text=True)
    assert "already issued" in page
    assert cs.PreRegistration.get_by_id(second.id).status == "pending"


def test_the_catalogue_reads_on_and_changes_nothing_while_the_database_is_busy(env) -> None:
    import sqlite3

    me = env["data"].readers[44]
    client, token = reader_login(env["app"], me.card, me.pin)
    title = env["data"].titles[11]
    assert "Абай жолы" in client.get("/catalogue/?q=abai").get_data(as_text=True)
    # A title another process wrote: the next search wants to index it, and cannot.
    cs.Title.create(id="T99990", title="Жаңа кітап", author="Жаңа автор")
    locker = sqlite3.connect(env["db"], timeout=1)
    locker.execute("BEGIN IMMEDIATE")   # ingest holding the write lock for a long batch
    try:
        r = client.post(f"/catalogue/titles/{title.id}/reserve", follow_redirects=True,
                        data={"pickup": "b-central", "csrf": token},
                        headers={"Referer": f"http://localhost/catalogue/titles/{title.id}"})
        page = r.get_data(as_text=True)
        assert r.status_code == 200 and r.request.path == f"/catalogue/titles/{title.id}"
        assert "Nothing was changed: the database is busy" in page
        assert "changes are paused" in page             # the read-only notice
        assert re.search(r"<fieldset\s+disabled", page)  # the reserve button greyed out
        # Searching, a title's page and the reader's own account still answer.
        assert "Абай жолы" in client.get("/catalogue/?q=abai").get_data(as_text=True)
        account = client.get("/catalogue/account").get_data(as_text=True)
        assert me.name in account and "changes are paused" in account
        # Signing in counts attempts (a write): it waits too, and says so; nothing breaks.
        other = env["data"].readers[45]
        late = new_client(env["app"])
        r = late.post("/catalogue/login", data={"card": other.card, "pin": other.pin,
                                                "csrf": csrf(late, "/catalogue/login")})
        assert r.status_code == 503 and "Nothing was changed" in r.get_data(as_text=True)
    finally:
        locker.rollback()
        locker.close()
    assert not cs.Hold.select().where(cs.Hold.reader == me.card,
                                      cs.Hold.title_id == title.id).exists()
    assert "Жаңа кітап" in client.get("/catalogue/?q=zhana").get_data(as_text=True)
    reader_login(env["app"], other.card, other.pin)
    r = client.post(f"/catalogue/titles/{title.id}/reserve", follow_redirects=True,
                    data={"pickup": "b-central", "csrf": token})
    assert "changes are paused" not in r.get_data(as_text=True)
    assert cs.Hold.select().where(cs.Hold.reader == me.card, cs.Hold.title_id == title.id).exists()
