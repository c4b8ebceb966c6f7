"""The figures of one run: what was measured, against which target, printed and kept as JSON."""
from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results")


@dataclass
class Figure:
    """One line of the table."""

    key: str
    name: str
    target: str
    value: float | None = None
    unit: str = ""
    met: bool | None = None      # None: no target, or not measured
    shown: str = ""              # the value as a person reads it
    note: str = ""               # what was measured, or why not
    runs: list[float] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)

    def set(self, value: float | None, shown: str, met: bool | None, **detail: Any) -> Figure:
        """Record the result."""
        self.value, self.shown, self.met = value, shown, met
        self.detail.update(detail)
        return self


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of a process, in KiB; empty if it is gone."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def median(xs: list[float]) -> float:
    """The median of the runs (the figure we quote)."""
    return float(statistics.median(xs))


def percentile(xs: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``xs``."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


class CpuMeter:
    """How busy the whole machine was between start and stop (all cores, every process)."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
        idle = parts[3] + parts[4]
        return sum(parts) - idle, sum(parts)

    def stop(self) -> dict[str, float]:
        """Busy share of the machine and the 1-minute load average now."""
        busy0, total0 = self._start
        busy1, total1 = self._read()
        share = (busy1 - busy0) / max(1, total1 - total0)
        return {"machine_busy": round(share, 3), "loadavg_1m": round(os.getloadavg()[0], 2)}


def others_busy() -> list[str]:
    """Other people's heavy work right now (test runs, demos), to note the load."""
    mine = {os.getpid(), os.getppid()}
    found: dict[str, int] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in mine:
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        words = [Path(a).name for a in argv[:3]]
        what = next((w for w in ("pytest", "kitap") if w in words), None)
        if what is None or "bench" in " ".join(argv):
            continue
        rest = argv[words.index(what) + 1:]
        text = f"kitap {rest[0]}" if what == "kitap" and rest else \
            f"pytest {' '.join(rest)}"[:48].strip()
        found[text] = found.get(text, 0) + 1
    return [f"{text} (x{n})" if n > 1 else text for text, n in sorted(found.items())]


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) \
        else "?"


def code_version() -> dict[str, Any]:
    """Which code was measured: the commit, and how many product files differ from it."""
    import cloud

    root = Path(cloud.__file__).resolve().parent.parent
    source = root / "SOURCE"   # an exported tree says where it came from
    if source.exists():
        return {"code": source.read_text().strip()}
    commit = _version(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "cloud",
                            "edge", "protocol", "kitap"], capture_output=True, text=True).stdout
    changed = len(dirty.splitlines())
    return {"code": f"{commit}" + (f" with {changed} product files changed" if changed else "")}


def machine_speed(workdir: Path) -> dict[str, float]:
    """Two yardsticks taken beside the figures: Python's speed here now, and an fsync's cost.

    ``python_ms``: a fixed pure-Python workload on one core; twice the time means
    the figures around it had about half a core's worth of Python speed left.
    ``fsync_ms``: the median of 30 small write + fsync, what every commit with
    synchronous=FULL pays.
    """
    t = time.perf_counter()
    total = 0
    for i in range(300_000):
        total += len(str(i * 7))
    python_ms = 1000 * (time.perf_counter() - t)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "fsync.probe"
    times = []
    with path.open("wb") as f:
        for _ in range(30):
            t = time.perf_counter()
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - t)
    path.unlink()
    return {"python_ms": round(python_ms, 1), "fsync_ms": round(1000 * median(times), 2)}


def host() -> dict[str, Any]:
    """The machine the figures belong to."""
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    from kitap.procs import find_mosquitto

    return {**code_version(), "cpus": os.cpu_count(), "memory_mib": mem,
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "kernel": platform.release(),
            "mosquitto": _version([find_mosquitto(), "-h"]).replace("mosquitto version ", ""),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


@dataclass
class Run:
    """Everything one `make bench` run found."""

    mode: str
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    host: dict[str, Any] = field(default_factory=host)
    shape: dict[str, Any] = field(default_factory=dict)
    generated: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    profiles: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def figure(self, key: str, name: str, target: str) -> Figure:
        """A new line of the table."""
        fig = Figure(key, name, target)
        self.figures.append(fig)
        return fig

    def save(self, directory: Path = RESULTS) -> Path:
        """Write the run as JSON; the file name sorts by time."""
        self.seconds = round(time.perf_counter() - self._t0, 1)
        directory.mkdir(parents=True, exist_ok=True)
        stamp = self.started.replace(":", "").replace("-", "")[:15]
        path = directory / f"{stamp}-{self.mode}.json"
        doc = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        path.write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n")
        return path


def previous(mode: str, directory: Path = RESULTS, before: str | None = None) -> dict[str, Any]:
    """The figures of the newest earlier run of the same mode, by key."""
    runs = sorted(directory.glob(f"*-{mode}.json"))
    for path in reversed(runs):
        doc = json.loads(path.read_text())
        if before is None or doc.get("started", "") < before:
            return {f["key"]: f for f in doc.get("figures", [])} | {"_file": path.name}
    return {}


def table(run: Run, prev: dict[str, Any]) -> str:
    """The table a person compares from run to run."""
    head = ("figure", "result", "target", "", f"previous ({prev.get('_file', 'none')})")
    rows = [head]
    for f in run.figures:
        mark = {True: "ok", False: "MISSED", None: "-"}[f.met]
        p = prev.get(f.key, {})
        rows.append((f.name, f.shown or "-", f.target, mark, p.get("shown", "") or ""))
    widths = [min(60, max(len(r[i]) for r in rows)) for i in range(len(head))]
    out = []
    for i, r in enumerate(rows):
        out.append("  ".join(c.ljust(w)[:max(w, len(c))] for c, w in zip(r, widths, strict=True))
                   .rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown(run: Run) -> str:
    """The same table in Markdown, for README.md and docs/performance.md."""
    lines = ["| figure | result | target | |", "| --- | --- | --- | --- |"]
    for f in run.figures:
        mark = {True: "met", False: "**missed**", None: "—"}[f.met]
        lines.append(f"| {f.name} | {f.shown or '—'} | {f.target} | {mark} |")
    return "\n".join(lines)
