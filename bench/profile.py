"""Where the time goes: py-spy samples a process (ours or another) and a short summary is kept.

py-spy reads the target's memory from outside (``--nonblocking``: the target is
never paused), so the figure measured while it samples is the figure without
it, give or take a few per cent. Samples are kept as py-spy's "raw" collapsed
stacks (one line per distinct stack, with a count); ``summarize`` folds them
into the functions that hold the most time, inclusive and on their own.
"""
from __future__ import annotations

import logging
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

# Samples per second: 200 gives a few thousand samples in a run of seconds,
# enough for shares to a per cent, at a cost the target does not notice.
RATE = 200
# Frames of these packages are the ones we can change; the summary names them first.
OURS = ("cloud/", "edge/", "protocol/", "kitap/")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")


def py_spy() -> str | None:
    """The py-spy binary next to this interpreter, or on PATH."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


class Spy:
    """Sample process ``pid`` while the block runs; the raw stacks go to ``out``."""

    def __init__(self, pid: int, out: Path, *, rate: int = RATE, idle: bool = True) -> None:
        self.pid, self.out, self.rate, self.idle = pid, out, rate, idle
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Spy:
        exe = py_spy()
        if exe is None:
            logger.warning("py-spy not installed: no profile (pip install -e '.[dev]')")
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        argv = [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format",
                "raw", "--nolineno", "--nonblocking", "--output", str(self.out)]
        if self.idle:
            argv.append("--idle")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            logger.warning("py-spy wrote no profile: %s", err.decode(errors="replace")[-500:])


@dataclass
class Summary:
    """The shares of the sampled time, by function."""

    samples: int
    inclusive: list[tuple[str, float]] = field(default_factory=list)
    own: list[tuple[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"samples": self.samples,
                "inclusive": [[f, round(p, 1)] for f, p in self.inclusive],
                "self": [[f, round(p, 1)] for f, p in self.own]}

    def render(self, title: str) -> str:
        """A few lines a person reads: the heaviest functions, inclusive and on their own."""
        lines = [f"{title}: {self.samples} samples"]
        lines += ["  inclusive (time in the function and what it calls):"]
        lines += [f"    {p:5.1f} %  {f}" for f, p in self.inclusive]
        lines += ["  self (time in the function's own code, C calls included):"]
        lines += [f"    {p:5.1f} %  {f}" for f, p in self.own]
        return "\n".join(lines)


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('func')} ({path})"


def summarize(path: Path, root: str | None = None, top: int = 14) -> Summary:
    """Fold py-spy raw stacks; only stacks through a frame containing ``root`` if given."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return Summary(0)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";")]
        if root is not None:
            at = next((i for i, f in enumerate(frames) if root in f), None)
            if at is None:
                continue
            frames = frames[at:]
        n = int(count)
        total += n
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    if not total:
        return Summary(0)

    def pct(c: Counter[str], keep: Any) -> list[tuple[str, float]]:
        return [(f, 100.0 * n / total) for f, n in c.most_common() if keep(f)][:top]

    ours = pct(inclusive, lambda f: any(o in f for o in OURS))
    return Summary(total, ours, pct(own, lambda f: True))
