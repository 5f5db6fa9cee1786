"""What every ``tools/`` script shares: how it starts, how it fails, and flag groups.

Each tool is ``def main(argv) -> int`` plus ``run = cli.runner(main)``. :func:`runner`:

* makes ``--help`` list the tool's own flags (a console script's main module is the setuptools
  wrapper, so absl would list none) and adds ``--debug``;
* turns :class:`tfod.errors.BadInput` (and ``absl`` usage errors) into one line
  ``tfod-<tool>: error: <file>, row <row>: <reason>`` and exit 2, any other exception into one
  line and exit 1, with the traceback only under ``--debug``.

Flag groups used by several tools are defined here once, as functions a tool calls at import
(absl flags are global, so each group is defined only in the processes that ask for it).
"""
from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from absl import app, flags

from tfod.errors import BAD_INPUT, FAILED, BadInput

FLAGS = flags.FLAGS
_DEBUG = flags.DEFINE_bool("debug", False, "On an error, show the Python traceback.")


def tool_name() -> str:
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "tfod"


def fail(message: str, code: int) -> int:
    print(f"{tool_name()}: error: {message}", file=sys.stderr)
    return code


def guarded(main: Callable[[list[str]], int | None]) -> Callable[[list[str]], int]:
    """``main`` with tfod's error convention (see the module docstring)."""

    def checked(argv):
        if len(argv) > 1:
            return fail(f"unexpected arguments: {' '.join(argv[1:])}", BAD_INPUT)
        try:
            return main(argv) or 0
        except (BadInput, app.UsageError, flags.ValidationError) as error:
            if _DEBUG.value:
                traceback.print_exc()
            return fail(str(error), BAD_INPUT)
        except KeyboardInterrupt:
            return fail("interrupted", FAILED)
        except Exception as error:  # noqa: BLE001  (one line, traceback under --debug)
            if _DEBUG.value:
                traceback.print_exc()
            return fail(f"{type(error).__name__}: {error} (--debug shows the traceback)", FAILED)

    return checked


def show_tool_flags_in_help(tool_module: str) -> None:
    """Make ``--help`` list ``tool_module``'s flags (and the shared ones it defined)."""
    main_module = sys.argv[0] if sys.argv else tool_module
    for module in (tool_module, __name__):
        for flag in FLAGS.get_flags_for_module(module):
            FLAGS.register_key_flag_for_module(main_module, flag)


def runner(main: Callable[[list[str]], int | None]) -> Callable[[], None]:
    """The console script's entry point for a tool whose ``main`` is given."""

    def run() -> None:
        show_tool_flags_in_help(main.__module__)
        app.run(guarded(main))

    return run


def require(*holders: flags.FlagHolder) -> None:
    """Raise a usage error for the first of ``holders`` that was not given."""
    for holder in holders:
        if holder.value is None:
            raise app.UsageError(f"--{holder.name} is required")
