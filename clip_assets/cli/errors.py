"""How the command reports what went wrong: one line naming it and what to do, a non-zero exit, and the
traceback only with `--debug`."""

from __future__ import annotations

import click


class UsageProblem(click.ClickException):
    """A mistake the user can fix (a dataset, partition, folder or setting that is not right), exit status 2."""

    exit_code = 2


def one_line(error: BaseException) -> str:
    """An exception as one line: its root cause's first line (Dagster wraps a component's own error in
    its own "error while building definitions"), its type where the message does not say it."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    known = isinstance(error, (click.ClickException, OSError, ValueError, LookupError))
    return first if known and first else f"{type(error).__name__}: {first}".rstrip(": ")
