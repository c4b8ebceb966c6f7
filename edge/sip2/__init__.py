"""SIP2 (3M Standard Interchange Protocol 2.00) for a branch's self-checks and sorters.

The kiosks and RFID sorters a branch already owns speak SIP2 over TCP. Here
they speak it to the branch's own edge node, which decides with the node's
rules whether or not the cloud is reachable. ``codec`` and ``fields`` are the
wire (sans-IO), ``session`` with ``patron`` and ``circulation`` map each
message onto the node's ``EdgeStore``, ``accounts`` holds the kiosks' logins
and settings, ``server`` is the TCP/TLS listener. ``docs/sip2.md`` says what
is supported, field by field.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from edge.sip2.server import Sip2Server

DEFAULT_PORT = 6001  # the port self-check vendors configure for SIP2 by default


def init_app(app: Flask) -> Sip2Server | None:
    """Start the SIP2 server when ``SIP2_PORT`` is set; ``shutdown(app)`` stops it."""
    port = app.config.get("SIP2_PORT")
    if port is None or port == "":
        return None
    from edge.sip2 import accounts
    from edge.sip2.server import Sip2Server, tls_context

    accounts.init_tables()

    def link_up() -> bool:
        sync = app.extensions.get("kitap.sync")
        return bool(sync is not None and sync.connected)

    def notify() -> None:
        sync = app.extensions.get("kitap.sync")
        if sync is not None:
            sync.poke()

    cert = app.config.get("SIP2_TLS_CERT")
    server = Sip2Server(app.extensions["kitap.store"],
                        host=str(app.config.get("SIP2_HOST") or "127.0.0.1"), port=int(port),
                        link_up=link_up, notify=notify,
                        ssl_context=tls_context(cert, app.config.get("SIP2_TLS_KEY"))
                        if cert else None,
                        default_charset=str(app.config.get("SIP2_CHARSET") or "utf-8"),
                        idle_timeout=app.config.get("SIP2_IDLE_TIMEOUT"),
                        partial_timeout=app.config.get("SIP2_PARTIAL_TIMEOUT"),
                        login_timeout=app.config.get("SIP2_LOGIN_TIMEOUT"),
                        status_before_login=bool(app.config.get("SIP2_STATUS_BEFORE_LOGIN")))
    server.start()
    app.extensions["kitap.sip2"] = server
    return server


def shutdown(app: Flask) -> None:
    """Stop the SIP2 server, if one runs."""
    server = app.extensions.get("kitap.sip2")
    if server is not None:
        server.stop()
