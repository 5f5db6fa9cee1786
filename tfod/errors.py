"""Exit codes and the bad-input error shared by every tool and process (see docs/errors.md).

A bad input or flag prints one line naming the file, row and reason and exits
:data:`BAD_INPUT`; a run that fails exits :data:`FAILED`; a trainer stopped by a non-finite loss
exits :data:`NAN_LOSS` (the launchers never restart it); a tool stopped by Ctrl-C (or SIGTERM,
for tfod-train) exits :data:`INTERRUPTED` (128 + SIGINT, the shell's convention). Library
modules raise :class:`BadInput` (or a subclass) for anything the user gave;
:func:`tfod.cli.run` turns it into the one line and the exit code.
"""
from __future__ import annotations

OK, FAILED, BAD_INPUT, NAN_LOSS = 0, 1, 2, 3
INTERRUPTED = 130


class BadInput(ValueError):
    """A file, row or flag the user gave that tfod cannot use.

    ``str()`` is the one line a tool prints: ``<file>, row <row>: <reason>`` (file and row when
    known; a row is the file's own line number, the header being line 1, as an editor shows it).
    """

    def __init__(self, reason: str, file=None, row: int | None = None):
        self.reason, self.file, self.row = reason, file, row
        where = ", ".join(part for part in (
            str(file) if file is not None else "", f"row {row}" if row is not None else "") if part)
        super().__init__(f"{where}: {reason}" if where else reason)


class RunFailed(RuntimeError):
    """A run that started from good inputs and could not finish (exit :data:`FAILED`)."""


class FormatError(BadInput):
    """A labels, detections, submission or folds file that breaks its format."""

    def __init__(self, path, row: int | None, message: str):
        super().__init__(message, path, row)
        self.path = str(path)
