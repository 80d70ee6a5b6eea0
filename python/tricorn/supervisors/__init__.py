"""Supervisors: run the server in child processes (`--workers N`, `--reload`); they know nothing of HTTP."""
