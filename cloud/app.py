"""The cloud's app factory: the store, the API, the console and catalogue, and the consumer."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_smorest import Api

from cloud import console, store, web

DEFAULTS: dict[str, Any] = {
    "DATABASE_URL": store.DEFAULT_URL,
    "MQTT_HOST": "127.0.0.1",
    "MQTT_PORT": 1883,
    "MQTT_USERNAME": None,
    "MQTT_PASSWORD": None,
    "SHARED_SUBSCRIPTION": False,  # True when several ingest processes share the nodes
    "START_CONSUMER": True,
    "API_TITLE": "kitap cloud",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.0.3",
    "OPENAPI_URL_PREFIX": "/api",
    "OPENAPI_JSON_PATH": "openapi.json",
    # Sessions: the secret is shared by every cloud process through the database
    # unless one is configured (cloud/console/common.py); cookies only over HTTPS
    # when KITAP_SESSION_COOKIE_SECURE=true (behind a TLS proxy).
    "SECRET_KEY": None,
    "SESSION_COOKIE_SECURE": False,
    # MARC files uploaded in the console: up to 1 GB (a whole national catalogue
    # export is a few hundred MB); kept in IMPORT_DIR (None: the system's temp dir).
    "MAX_CONTENT_LENGTH": 1024 * 1024 * 1024,
    "IMPORT_DIR": None,
    # The JSON API's token for integrations and scripts (KITAP_API_TOKEN, sent as
    # "Authorization: Bearer ..."); None: only console sessions reach the API.
    "API_TOKEN": None,
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
    store.connect(app.config["DATABASE_URL"])
    app.config["API_TOKEN"] = _text(app.config["API_TOKEN"])
    api = Api(app)
    web.register(api)
    app.register_blueprint(web.pages)
    console.init_app(app)
    if app.config["START_CONSUMER"]:
        from cloud.consumer import Consumer

        consumer = Consumer(host=app.config["MQTT_HOST"], port=int(app.config["MQTT_PORT"]),
                            shared=bool(app.config["SHARED_SUBSCRIPTION"]),
                            username=_text(app.config["MQTT_USERNAME"]),
                            password=_text(app.config["MQTT_PASSWORD"]))
        consumer.start()
        app.extensions["kitap.consumer"] = consumer
    return app


def shutdown(app: Flask) -> None:
    """Stop the consumer."""
    consumer = app.extensions.get("kitap.consumer")
    if consumer is not None:
        consumer.stop()
