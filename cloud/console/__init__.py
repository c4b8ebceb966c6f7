"""The ops console (staff) and, beside it, the readers' catalogue: registered on the cloud app.

``init_app(app)`` adds both blueprints with their shared machinery (session
secret, CSRF, languages, the busy-database notice, error pages).
"""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the console (/console) and the catalogue (/catalogue) on ``app``."""
    from cloud import catalogue, catalogue_services
    from cloud.console import admin, inventory, network, queue, readers, restock, stats, words
    from cloud.console import services as console_services
    from cloud.console.auth import bp
    from cloud.console.common import init_app as init_common

    del admin, inventory, network, queue, readers, restock, stats, words  # their routes are on bp
    del console_services, catalogue_services  # their routes are on the blueprints
    init_common(app)
    app.register_blueprint(bp)
    app.register_blueprint(catalogue.bp)
