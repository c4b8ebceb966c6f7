"""Backing up and restoring the cloud's store, while it runs.

SQLite: the online backup API copies a consistent snapshot page by page while
ingest keeps writing. PostgreSQL: ``pg_dump --format=custom`` and
``pg_restore``. After a restore the cloud is behind the nodes; each node keeps
its journal (7 days) and sends again what the restored cloud lacks — the cloud
asks when a node's status shows more events than it has (cloud/consumer.py).
"""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path
from urllib.parse import urlparse

# Pages copied per step of the online backup: small steps let ingest write between them.
PAGES_PER_STEP = 1024


class BackupError(Exception):
    """A backup or restore that could not be done, with the reason."""


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    return None


def backup(url: str, out: Path) -> Path:
    """Write a consistent copy of the cloud's database at ``url`` to ``out``."""
    path = _sqlite_path(url)
    if path is not None:
        if not path.exists():
            raise BackupError(f"no database at {path}")
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        dst = sqlite3.connect(out)
        try:
            src.backup(dst, pages=PAGES_PER_STEP)
        finally:
            dst.close()
            src.close()
        return out
    if urlparse(url).scheme.startswith("postgres"):
        _run(["pg_dump", "--format=custom", "--file", str(out), url])
        return out
    raise BackupError(f"cannot back up {url}: only sqlite:/// and postgresql:// are known")


def restore(backup_file: Path, url: str, *, force: bool = False) -> None:
    """Restore ``backup_file`` into the (stopped) cloud database at ``url``."""
    if not backup_file.exists():
        raise BackupError(f"no backup at {backup_file}")
    path = _sqlite_path(url)
    if path is not None:
        if path.exists() and not force:
            raise BackupError(f"{path} exists: stop the cloud and pass --force to replace it")
        for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            extra.unlink(missing_ok=True)
        shutil.copyfile(backup_file, path)
        return
    if urlparse(url).scheme.startswith("postgres"):
        _run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--dbname", url,
              str(backup_file)])
        return
    raise BackupError(f"cannot restore into {url}")


def _run(argv: list[str]) -> None:
    if shutil.which(argv[0]) is None:
        raise BackupError(f"{argv[0]} not found (Debian: postgresql-client)")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"{argv[0]} failed: {done.stderr.strip()[:500]}")
