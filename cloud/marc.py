"""Catalogue import from MARC 21 (ISO 2709 or MARCXML) with pymarc, with progress.

A record becomes a ``Title``: 001 is its id (or, without one, the title whose
ISBN matches, else an id made from the ISBN or the text); 245 $a $b the title;
100/110/700 $a (else 245 $c) the author; 020 $a the ISBN; 041 $a or 008/35-37
the language; 264/260 $c or 008/07-10 the year; 942 $c (Koha's item type) or
008/22 (juvenile) the item type. Titles are written in batches, each in one
transaction with its change-feed records (every node learns the catalogue) and
its search index rows. A record pymarc cannot read is counted and skipped.
Progress is bytes read of the file: a callback for the command line, the
``MarcImport`` row for the console's progress bar.
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymarc

from cloud import catalogue_search, feed
from cloud import store as s

logger = logging.getLogger(__name__)

# Titles per transaction: big enough to import 100,000 records in minutes,
# small enough that ingest never waits long for the write lock.
BATCH = 500
LANGUAGES = {"kaz": "kk", "rus": "ru", "eng": "en"}
ITEM_TYPES = {"book": "book", "bk": "book", "children": "children", "juv": "children",
              "reference": "reference", "ref": "reference"}
JUVENILE = set("abcj")  # 008/22 target audience codes for children
ERRORS_KEPT = 20
_ID_OK = re.compile(r"[^A-Za-z0-9._-]+")
_TRAIL = re.compile(r"[\s/:;,.=]+$")

Progress = Callable[[int, int, int], None]  # (bytes done, bytes total, records)


@dataclass
class Result:
    """What an import did."""

    records: int = 0
    created: int = 0
    updated: int = 0
    errors: int = 0
    messages: list[str] = field(default_factory=list)


def _clean(text: str | None) -> str:
    return _TRAIL.sub("", (text or "").strip()).strip()


def _sub(rec: pymarc.Record, tag: str, code: str) -> str:
    for f in rec.get_fields(tag):
        values = f.get_subfields(code)
        if values:
            return str(values[0])
    return ""


def _control(rec: pymarc.Record, tag: str) -> str:
    fields = rec.get_fields(tag)
    return str(fields[0].data or "") if fields and fields[0].is_control_field() else ""


def title_from(rec: pymarc.Record) -> dict[str, Any] | None:
    """The Title row a record describes, or None if it has no title."""
    main = _clean(_sub(rec, "245", "a"))
    if not main:
        return None
    sub = _clean(_sub(rec, "245", "b"))
    title = f"{main}: {sub}" if sub else main
    author = (_clean(_sub(rec, "100", "a")) or _clean(_sub(rec, "110", "a"))
              or _clean(_sub(rec, "700", "a")) or _clean(_sub(rec, "245", "c")))
    isbn = catalogue_search.isbn_digits(_sub(rec, "020", "a").split(" ")[0])
    f008 = _control(rec, "008")
    lang = _sub(rec, "041", "a")[:3] or (f008[35:38] if len(f008) >= 38 else "")
    year_text = _sub(rec, "264", "c") or _sub(rec, "260", "c") or f008[7:11]
    year = int(m.group(0)) if (m := re.search(r"\d{4}", year_text)) else None
    kind = ITEM_TYPES.get(_sub(rec, "942", "c").strip().lower())
    if kind is None:
        kind = "children" if len(f008) > 22 and f008[22] in JUVENILE else "book"
    return {"id": _ID_OK.sub("", _control(rec, "001"))[:40], "title": title[:500],
            "author": author[:300], "isbn": isbn, "language": LANGUAGES.get(lang, lang.strip()),
            "year": year, "item_type": kind}


def _is_xml(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<")


def _assign_ids(rows: list[dict[str, Any]]) -> None:
    """Give records without 001 the id of the title with their ISBN, else a stable one."""
    isbns = [r["isbn"] for r in rows if not r["id"] and r["isbn"]]
    known = dict(s.Title.select(s.Title.isbn, s.Title.id).where(s.Title.isbn.in_(isbns))
                 .tuples()) if isbns else {}
    for r in rows:
        if r["id"]:
            continue
        if r["isbn"]:
            r["id"] = known.get(r["isbn"]) or f"ISBN{r['isbn']}"
        else:
            digest = hashlib.sha1(f"{r['title']}|{r['author']}".encode(),
                                  usedforsecurity=False).hexdigest()
            r["id"] = f"M{digest[:12]}"


def _write(rows: list[dict[str, Any]], result: Result) -> None:
    _assign_ids(rows)
    by_id = {r["id"]: r for r in rows}  # the last record with an id wins
    ids = list(by_id)
    with feed.transaction():
        existing = {t for (t,) in s.Title.select(s.Title.id).where(s.Title.id.in_(ids)).tuples()}
        s.upsert(s.Title, list(by_id.values()), [s.Title.id])
        for tid in ids:
            if tid in existing:
                feed.title_changed(tid)
            else:
                feed.record("title", tid, "upsert",
                            feed.title_data(s.Title.get(s.Title.id == tid), waiting=0))
        catalogue_search.reindex(ids)
    result.created += len(ids) - len(existing)
    result.updated += len(existing)


def import_file(path: Path, progress: Progress | None = None) -> Result:
    """Import every record of a MARC file; ``progress`` is called after each batch."""
    path = Path(path)
    total = path.stat().st_size
    result = Result()
    batch: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        def take(rec: pymarc.Record | None) -> None:
            result.records += 1
            row = title_from(rec) if rec is not None else None
            if row is None:
                result.errors += 1
                if len(result.messages) < ERRORS_KEPT:
                    why = "unreadable record" if rec is None else "no title (245 $a)"
                    result.messages.append(f"record {result.records}: {why}")
                return
            batch.append(row)
            if len(batch) >= BATCH:
                _write(batch, result)
                batch.clear()
                if progress:
                    progress(min(fh.tell(), total), total, result.records)

        if _is_xml(path):
            # MARCXML: pymarc's SAX parser hands over each record as it is read.
            pymarc.map_xml(take, fh)
        else:
            for rec in pymarc.MARCReader(fh, to_unicode=True, force_utf8=False,
                                         utf8_handling="replace", permissive=True):
                take(rec)
        if batch:
            _write(batch, result)
    if progress:
        progress(total, total, result.records)
    logger.info("MARC import of %s: %d records, %d new, %d updated, %d skipped", path.name,
                result.records, result.created, result.updated, result.errors)
    return result


def start_job(filename: str, path: Path, started_by: str) -> s.MarcImport:
    """The row that tracks an import about to run."""
    now = s.utcnow()
    job: s.MarcImport = s.MarcImport.create(filename=filename, started_by=started_by,
                                            started_at=now, updated_at=now,
                                            total_bytes=path.stat().st_size)
    return job


def run_job(job_id: int, path: Path, remove: bool = True) -> None:
    """Run an import, keeping its ``MarcImport`` row up to date; never raises."""
    def progress(done: int, total: int, records: int) -> None:
        s.MarcImport.update(done_bytes=done, total_bytes=total, records=records,
                            updated_at=s.utcnow()).where(s.MarcImport.id == job_id).execute()
    try:
        result = import_file(path, progress)
    except Exception as exc:  # noqa: BLE001 - the console shows why it stopped
        logger.exception("MARC import %d failed", job_id)
        s.MarcImport.update(status="failed", message=str(exc)[:1000], finished_at=s.utcnow(),
                            updated_at=s.utcnow()).where(s.MarcImport.id == job_id).execute()
    else:
        s.MarcImport.update(status="done", records=result.records, created=result.created,
                            updated=result.updated, errors=result.errors,
                            message="\n".join(result.messages), finished_at=s.utcnow(),
                            updated_at=s.utcnow()).where(s.MarcImport.id == job_id).execute()
    finally:
        if remove:
            path.unlink(missing_ok=True)
        if not s.db.is_closed():
            s.db.close()


# -- writing (the demo's sample catalogue, tests) ---------------------------------------

def _f008(row: dict[str, Any]) -> str:
    """The 40 fixed positions for a book: date1 07-10, audience 22, language 35-37."""
    year = f"{row.get('year') or ''}"[:4].rjust(4)
    lang = {v: k for k, v in LANGUAGES.items()}.get(row.get("language", ""), "und")
    audience = "j" if row.get("item_type") == "children" else " "
    f008 = f"000000s{year}    xx     {audience}      000 0 {lang} d"
    assert len(f008) == 40, f008
    return f008


def record_for(row: dict[str, Any]) -> pymarc.Record:
    """A MARC 21 bibliographic record for a Title row (what ``title_from`` reads back)."""
    rec = pymarc.Record(force_utf8=True, leader="00000nam a2200000 i 4500")
    S = pymarc.Subfield  # noqa: N806 - pymarc's name
    rec.add_field(pymarc.Field(tag="001", data=row["id"]),
                  pymarc.Field(tag="008", data=_f008(row)))
    if row.get("isbn"):
        rec.add_field(pymarc.Field("020", pymarc.Indicators(" ", " "), [S("a", row["isbn"])]))
    if row.get("author"):
        rec.add_field(pymarc.Field("100", pymarc.Indicators("1", " "),
                                   [S("a", row["author"] + ".")]))
    rec.add_field(pymarc.Field("245", pymarc.Indicators("1", "0"), [S("a", row["title"])]))
    if row.get("year"):
        rec.add_field(pymarc.Field("264", pymarc.Indicators(" ", "1"),
                                   [S("c", str(row["year"]))]))
    rec.add_field(pymarc.Field("942", pymarc.Indicators(" ", " "),
                               [S("c", row.get("item_type") or "book")]))
    return rec


def write_file(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Write Title rows as an ISO 2709 file; returns how many."""
    n = 0
    with Path(path).open("wb") as fh:
        writer = pymarc.MARCWriter(fh)
        for row in rows:
            writer.write(record_for(row))
            n += 1
        writer.close(close_fh=False)
    return n
