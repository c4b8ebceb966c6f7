"""MARC 21 import (pymarc): ISO 2709 and MARCXML, what each field becomes, broken records,
progress for large files, and the same import from the console and the command line."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pymarc
import pytest
from click.testing import CliRunner

from cloud import catalogue_search, marc
from cloud import store as cs
from kitap.cli import main as cli
from kitap.sample_data import catalogue


def rows() -> list[dict]:
    return [{"id": t.id, "title": t.title, "author": t.author, "isbn": t.isbn,
             "language": t.language, "year": t.year, "item_type": t.item_type}
            for t in catalogue()]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "cloud.db"
    cs.connect(f"sqlite:///{path}")
    yield path
    cs.db.close()


def test_the_sample_catalogue_survives_a_round_trip_through_marc(db, tmp_path: Path) -> None:
    expected = rows()
    path = tmp_path / "catalogue.mrc"
    assert marc.write_file(expected, path) == len(expected)
    seen: list[tuple[int, int, int]] = []
    result = marc.import_file(path, lambda done, total, n: seen.append((done, total, n)))
    assert (result.records, result.created, result.updated, result.errors) == (
        len(expected), len(expected), 0, 0)
    for row in expected:
        t = cs.Title.get_by_id(row["id"])
        assert {k: getattr(t, k) for k in row} == row
    # Every title reaches the nodes through the feed, and the search index knows it.
    assert cs.Change.select().where(cs.Change.entity == "title").count() == len(expected)
    assert "Абай жолы" in {t.title for t in catalogue_search.search("abai zholy").titles}
    # Progress only grows and ends at the whole file.
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    assert seen[-1][0] == seen[-1][1] == path.stat().st_size
    # Importing again updates, never duplicates.
    again = marc.import_file(path)
    assert (again.created, again.updated) == (0, len(expected))
    assert cs.Title.select().count() == len(expected)


def test_fields_of_a_library_record_and_records_without_001_or_title(db, tmp_path: Path) -> None:
    S = pymarc.Subfield  # noqa: N806
    known = cs.Title.create(id="T777", title="Old title", author="", isbn="9786010000017")
    rec = pymarc.Record(force_utf8=True)
    rec.add_field(
        pymarc.Field("008", data="210101s2019    kz a          000 0 kaz d"),
        pymarc.Field("020", pymarc.Indicators(" ", " "), [S("a", "978-601-00-0001-7 (pbk.)")]),
        pymarc.Field("100", pymarc.Indicators("1", " "), [S("a", "Әуезов, Мұхтар,")]),
        pymarc.Field("245", pymarc.Indicators("1", "0"),
                     [S("a", "Абай жолы :"), S("b", "роман-эпопея /"), S("c", "М. Әуезов.")]),
        pymarc.Field("260", pymarc.Indicators(" ", " "), [S("c", "c2019.")]))
    no_title = pymarc.Record(force_utf8=True)
    no_title.add_field(pymarc.Field("001", data="X1"))
    child = marc.record_for({"id": "T900", "title": "Алдар Көсе", "author": "",
                             "item_type": "children", "language": "kk", "year": 2001})
    path = tmp_path / "mixed.mrc"
    garbage = b"00030" + b"not a MARC record!!!!!!" + b"\x1e\x1d"   # right length, bad body
    assert len(garbage) == 30
    path.write_bytes(rec.as_marc() + no_title.as_marc() + garbage + child.as_marc())
    result = marc.import_file(path)
    assert result.records == 4 and result.errors == 2 and len(result.messages) == 2
    t = cs.Title.get_by_id(known.id)        # no 001: the title with that ISBN is updated
    assert (t.title, t.author, t.language, t.year) == (
        "Абай жолы: роман-эпопея", "Әуезов, Мұхтар", "kk", 2019)
    assert cs.Title.get_by_id("T900").item_type == "children"


def test_marcxml_is_imported_too(db, tmp_path: Path) -> None:
    buf = io.BytesIO()
    writer = pymarc.XMLWriter(buf)
    for row in rows()[:25]:
        writer.write(marc.record_for(row))
    writer.close(close_fh=False)
    path = tmp_path / "catalogue.xml"
    path.write_bytes(buf.getvalue())
    result = marc.import_file(path)
    assert (result.records, result.created, result.errors) == (25, 25, 0)


def test_the_command_line_imports_with_a_progress_bar(db, tmp_path: Path) -> None:
    path = tmp_path / "catalogue.mrc"
    marc.write_file(rows()[:40], path)
    out = CliRunner().invoke(cli, ["admin", "--db", f"sqlite:///{db}", "marc-import", str(path)])
    assert out.exit_code == 0, out.output
    assert "40 records: 40 new titles" in out.output
    cs.connect(f"sqlite:///{db}")
    assert cs.Title.select().count() == 40


def test_an_administrator_imports_from_the_console_and_follows_progress(db,
                                                                       tmp_path: Path) -> None:
    from cloud.app import create_app
    from tests.console_data import ADMIN
    from tests.test_console import csrf, login

    cs.db.close()
    app = create_app({"DATABASE_URL": f"sqlite:///{db}", "START_CONSUMER": False,
                      "IMPORT_DIR": str(tmp_path)})
    from cloud import accounts
    accounts.add_staff(*ADMIN, "administrator")
    client, token = login(app, ADMIN)
    data = io.BytesIO()
    marc.write_file(rows(), tmp_path / "upload.mrc")
    data.write((tmp_path / "upload.mrc").read_bytes())
    data.seek(0)
    r = client.post("/console/import", data={"csrf": csrf(client, "/console/import"),
                                             "file": (data, "catalogue.mrc")},
                    content_type="multipart/form-data", headers={"Accept": "application/json"})
    assert r.status_code == 202
    job = r.get_json()["id"]
    from kitap.procs import wait_for

    view = wait_for(lambda: (v := client.get(f"/console/import/{job}?format=json").get_json())
                    ["status"] == "done" and v, 30, what="the import to finish")
    assert view["percent"] == 100 and view["records"] == len(rows()) == view["created"]
    assert not list(tmp_path.glob("kitap-marc-*"))      # the upload is removed afterwards
    entry = cs.AuditEntry.get(cs.AuditEntry.action == "marc.import")
    assert entry.actor == ADMIN[0] and "catalogue.mrc" in entry.detail
    page = client.get(f"/console/import/{job}").get_data(as_text=True)
    assert re.search(r'<progress id="job-bar" max="100" value="100">', page)
    assert json.loads(json.dumps(view))["errors"] == 0
    del token
