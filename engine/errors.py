"""Errors every layer understands; the UI maps them to HTTP statuses.

Their messages are written for end users: what is wrong and how to fix it.
"""
from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (drivers append SQL and hints), or its type."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class LoomError(Exception):
    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(LoomError):
    status = 404


class Forbidden(LoomError):
    status = 403


class Conflict(LoomError):
    """Not allowed in the current state (e.g. a transition from the wrong state)."""
    status = 409


class RecordInvalid(LoomError):
    """Per-field problems: ``[{"field": ..., "code": ..., "message": ...}]``."""
    status = 422

    def __init__(self, errors: list[dict]):
        super().__init__("; ".join(f"{e.get('field') or '-'}: {e['message']}" for e in errors))
        self.errors = errors
