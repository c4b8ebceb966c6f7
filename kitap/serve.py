"""Run a Flask app as a long-lived process: threaded server, clean stop on SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

logger = logging.getLogger(__name__)


def split_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``host:port`` or ``host`` to a pair."""
    host, _, port = text.rpartition(":")
    if not host:
        return text, default_port
    return host, int(port)


def run(app: Flask, host: str, port: int, on_stop: Callable[[Flask], None]) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then call ``on_stop(app)``."""
    server = make_server(host, port, app, threaded=True)

    def _stop(signum: int, frame: Any) -> None:
        logger.info("signal %d: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logger.info("serving on http://%s:%d/", host, server.server_port)
    try:
        server.serve_forever()
    finally:
        on_stop(app)
        logger.info("stopped")


def setup_logging(verbose: bool) -> None:
    """Log lines with time, level and source; the entry points call this, nothing else."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
