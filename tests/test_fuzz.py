"""A bounded pass of the coverage-guided fuzzers (atheris) over the byte-level parsers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
# Enough runs for libFuzzer to reach deep into both parsers in seconds.
RUNS = 30_000


@pytest.mark.parametrize("target", ["frames", "mqtt"])
def test_fuzzer_finds_no_crash(target: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_parsers.py"), target, f"-runs={RUNS}",
         "-seed=1", f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Done {RUNS} runs" in done.stderr
    assert not list(tmp_path.glob("crash-*"))
