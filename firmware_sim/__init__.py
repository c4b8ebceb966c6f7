"""The machine controller simulator: on a pty or a pyserial URL, with a control socket."""
