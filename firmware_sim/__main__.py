"""``python -m firmware_sim``: the same as ``kitap firmware-sim``."""
from __future__ import annotations

from firmware_sim.cli import command

if __name__ == "__main__":
    command(prog_name="firmware-sim")
