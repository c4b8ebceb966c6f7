"""The audit trail: who did what to whom, from the console, the catalogue or the command line.

Every staff action is written in the same transaction as the change it made
(call ``record`` inside it), so the trail never claims a change that was rolled
back nor misses one that was kept. Entries are never updated or deleted here.
"""
from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloud import store as s

# Rows a page of the trail shows: a shift's worth of actions at a busy desk.
PAGE_SIZE = 100


def record(actor: str, action: str, target: str = "", detail: str = "", *, role: str = "",
           node: str | None = None, ip: str | None = None,
           at: datetime | None = None) -> s.AuditEntry:
    """Append one entry (inside the caller's transaction)."""
    entry: s.AuditEntry = s.AuditEntry.create(
        at=at or s.utcnow(), actor=actor, role=role, action=action, target=target,
        detail=detail[:2000], node=node, ip=ip)
    return entry


def os_user() -> str:
    """Who runs this command, on which machine (``asel@ops-1``)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):   # no login name in the environment nor in passwd
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def record_cli(action: str, target: str = "", detail: str = "", *,
               node: str | None = None) -> s.AuditEntry:
    """An action taken with ``kitap admin``: actor "cli", and the OS user who ran it."""
    by = f"OS user {os_user()}"
    return record("cli", action, target, f"{detail} · {by}" if detail else by, node=node)


@dataclass(frozen=True)
class Page:
    """One page of entries, newest first, and whether older ones exist."""

    entries: list[s.AuditEntry]
    offset: int
    more: bool


def entries(*, actor: str = "", action: str = "", target: str = "", node: str = "",
            offset: int = 0, limit: int = PAGE_SIZE) -> Page:
    """Entries matching the filters (exact actor/action/node, target prefix), newest first."""
    query: Any = s.AuditEntry.select()
    if actor:
        query = query.where(s.AuditEntry.actor == actor)
    if action:
        query = query.where(s.AuditEntry.action == action)
    if target:
        query = query.where(s.AuditEntry.target.startswith(target))
    if node:
        query = query.where(s.AuditEntry.node == node)
    rows = list(query.order_by(s.AuditEntry.at.desc(), s.AuditEntry.id.desc())
                .offset(max(0, offset)).limit(limit + 1))
    return Page(rows[:limit], max(0, offset), len(rows) > limit)


def actions_known() -> list[str]:
    """Every action name in the trail, for the filter."""
    return [a for (a,) in s.AuditEntry.select(s.AuditEntry.action).distinct()
            .order_by(s.AuditEntry.action).tuples()]


def for_target(target: str, limit: int = 30) -> list[s.AuditEntry]:
    """The latest entries about one thing (a reader, a node, an exception)."""
    return list(s.AuditEntry.select().where(s.AuditEntry.target == target)
                .order_by(s.AuditEntry.at.desc(), s.AuditEntry.id.desc()).limit(limit))
