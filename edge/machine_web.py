"""The machine's HTTP calls: its status for anyone, the technician's actions for staff.

Registered by the app factory at a machine node (``api.register_blueprint(
machine_web.api)``, with the MachineService in ``app.extensions["kitap.machine"]``).
Staff calls need a staff session or the node's API token (edge/auth.py): a
technician logs in at the node's page, unlocks the service door from there,
restocks, closes the door; the node then scans the slots by itself.
"""
from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import Schema, fields, validate

from edge.auth import require_staff
from edge.hardware import HardwareError
from edge.machine import MAX_UNLOCK_SECONDS, MachineService

api = Blueprint("machine", __name__, url_prefix="/api/machine",
                description="The vending machine: status, service door, returns, audit")


class UnlockArgs(Schema):
    """How long the technician has to open the door."""

    seconds = fields.Int(load_default=None, allow_none=True,
                         validate=validate.Range(min=1, max=MAX_UNLOCK_SECONDS))


class ReturnsArgs(Schema):
    """Open or close the return chute."""

    open = fields.Bool(required=True)


def _machine() -> MachineService:
    machine: MachineService | None = current_app.extensions.get("kitap.machine")
    if machine is None:
        abort(404, message="This node drives no machine.")
    assert machine is not None
    return machine


def _controller_refused(exc: HardwareError) -> None:
    abort(409, message=f"The machine refused: {exc}", errors={"refusal": "machine_refused"})


@api.route("/status")
class StatusView(MethodView):
    """The machine as the kiosk and the status page show it."""

    def get(self) -> Any:
        """Online, faults, bin level, returns open or closed (and why), door, delivery."""
        return _machine().status()


@api.route("/service-door/unlock")
class UnlockView(MethodView):
    """The technician's way in."""

    @api.arguments(UnlockArgs)
    @require_staff
    def post(self, args: dict[str, Any]) -> Any:
        """Unlock the service door for ``seconds``; it locks again by itself when closed."""
        try:
            _machine().unlock_service_door(args.get("seconds"))
        except HardwareError as exc:
            _controller_refused(exc)
        return {"ok": True}


@api.route("/returns")
class ReturnsView(MethodView):
    """Returns at this machine."""

    @api.arguments(ReturnsArgs)
    @require_staff
    def post(self, args: dict[str, Any]) -> Any:
        """Open or close the return chute (opening is refused while the bin is full)."""
        machine = _machine()
        try:
            machine.set_returns(args["open"])
        except HardwareError as exc:
            _controller_refused(exc)
        return {"returns_open": machine.returns_open,
                "returns_closed_reason": machine.returns_closed_reason()}


@api.route("/audit")
class AuditView(MethodView):
    """A slot scan on demand."""

    @require_staff
    def post(self) -> Any:
        """Scan the slots now; the node's records follow, discrepancies go to the cloud."""
        try:
            return _machine().audit()
        except HardwareError as exc:
            _controller_refused(exc)
        return None


@api.route("/controller/adopt")
class AdoptView(MethodView):
    """A replaced controller board."""

    @require_staff
    def post(self) -> Any:
        """Accept the controller now on the port as this machine's (after a board swap)."""
        _machine().adopt_controller()
        return {"ok": True}
