"""User-facing errors: every message says what was wrong, where, and how to fix it."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (file, option, data). The CLI prints it and exits non-zero."""

    exit_code = 2


class DataError(UserError):
    """A data directory or data file does not satisfy the native layout."""


class SpecError(UserError):
    """A city or task file is malformed (missing or unknown key, wrong type)."""
