"""Coverage-guided fuzzing (atheris/libFuzzer) of the two byte-level parsers.

    python fuzz/fuzz_parsers.py frames -runs=200000      # the serial frame decoder
    python fuzz/fuzz_parsers.py mqtt -runs=200000        # the MQTT payload parsers

A crash is any exception other than the parsers' own refusals; libFuzzer then
writes the input that caused it. tests/test_fuzz.py runs a bounded pass.
"""
from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from protocol import frames
    from protocol.envelope import decode_ack, decode_batch, decode_status
    from protocol.errors import RejectedMessage
    from protocol.feed import decode_down, decode_sync


def fuzz_frames(data: bytes) -> None:
    """Any bytes, in any chunking: frames or BadFrames out, never an exception."""
    dec = frames.Decoder()
    fdp = atheris.FuzzedDataProvider(data)
    while fdp.remaining_bytes():
        dec.feed(fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64)))
        while True:
            out = dec.next_frame()
            if out is frames.NEED_DATA:
                break
            if isinstance(out, frames.Frame):
                # A decoded frame re-encodes to bytes that decode to the same frame.
                again = frames.Decoder()
                again.feed(frames.encode(out.seq, out.cmd, out.payload))
                assert again.next_frame() == out


def fuzz_mqtt(data: bytes) -> None:
    """Any payload on any topic kind: parsed or refused with a reason, nothing else."""
    for parse in (lambda p: decode_batch(p, "b-test"), decode_ack, decode_status,
                  decode_sync, decode_down):
        try:
            parse(data)
        except RejectedMessage as exc:
            assert exc.reason


def main() -> None:
    """Pick the target from argv[1]; the rest goes to libFuzzer."""
    target = {"frames": fuzz_frames, "mqtt": fuzz_mqtt}[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
