"""The edge node's app factory and process runner."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_smorest import Api

from edge import desk, kiosk, services_web, sip2, web
from edge.store import EdgeStore, set_clock_skew

logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "NODE_ID": "b-local",
    "NODE_KIND": "branch",        # branch | machine
    "DATABASE": "kitap-edge.db",
    "MQTT_HOST": "127.0.0.1",
    "MQTT_PORT": 1883,
    "MQTT_USERNAME": None,
    "MQTT_PASSWORD": None,
    "SERIAL_PORT": None,          # a machine's controller: a device path or pyserial URL
    "START_SYNC": True,           # tests of the HTTP layer alone may switch the link off
    "API_TOKEN": None,            # Bearer token for integrations (KITAP_API_TOKEN); None: off
    "API_TITLE": "kitap edge node",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/api",
    "OPENAPI_JSON_PATH": "openapi.json",
    "JSON_AS_ASCII": False,
    "SIP2_HOST": "127.0.0.1",     # self-checks' SIP2 server (edge/sip2, docs/sip2.md)
    "SIP2_PORT": None,            # None: off; 0: any free port (tests)
    "SIP2_TLS_CERT": None,        # PEM certificate (and key): SIP2 over TLS
    "SIP2_TLS_KEY": None,
    "SIP2_STATUS_BEFORE_LOGIN": False,   # answer 99 before 93 (RFID gates that poll first)
}


def _text(value: Any) -> str | None:
    # from_prefixed_env parses values as JSON: a password of digits arrives as an int.
    return None if value is None else str(value)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Defaults, then KITAP_* environment variables, then ``config`` (tests)."""
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("KITAP")
    if config:
        app.config.from_mapping(config)
    if app.config.get("CLOCK_SKEW_SECONDS"):
        set_clock_skew(float(app.config["CLOCK_SKEW_SECONDS"]))
    store = EdgeStore(app.config["NODE_ID"], app.config["DATABASE"])
    app.extensions["kitap.store"] = store
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = store.secret_key()
    api = Api(app)
    api.register_blueprint(web.api)
    app.register_blueprint(web.pages)
    kiosk.init_app(app)
    desk.init_app(app)
    services_web.init_app(app, api)
    machine = None
    if app.config["NODE_KIND"] == "machine":
        from edge import machine_web

        api.register_blueprint(machine_web.api)
        if app.config["SERIAL_PORT"]:
            from edge.machine import MachineService

            machine = MachineService(store, app.config["SERIAL_PORT"])
            app.extensions["kitap.machine"] = machine
    if app.config["START_SYNC"]:
        from edge.sync import SyncAgent

        sync = SyncAgent(store, host=app.config["MQTT_HOST"], port=int(app.config["MQTT_PORT"]),
                         kind=app.config["NODE_KIND"],
                         username=_text(app.config["MQTT_USERNAME"]),
                         password=_text(app.config["MQTT_PASSWORD"]))
        if machine is not None:
            # The machine's faults and hardware go into the retained MQTT status, and a
            # change of faults is published at once (the cloud's console shows both).
            sync.machine_status = machine.summary
            machine.on_faults = sync.set_faults
        sync.start()
        app.extensions["kitap.sync"] = sync
    if machine is not None:
        # Started after the sync agent exists, so its first fault list is not lost.
        machine.start()
    sip2.init_app(app)
    return app


def shutdown(app: Flask) -> None:
    """Stop the node's background parts in order: self-checks, hardware, then the link."""
    sip2.shutdown(app)
    machine = app.extensions.get("kitap.machine")
    if machine is not None:
        machine.stop()
    sync = app.extensions.get("kitap.sync")
    if sync is not None:
        sync.stop()
