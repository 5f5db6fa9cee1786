"""What every ``tools/`` script shares: how it starts, how it fails, and flag groups.

Each tool is ``def main(argv) -> int`` plus ``run = cli.runner(main)``. :func:`runner`:

* makes ``--help`` list the tool's own flags (a console script's main module is the setuptools
  wrapper, so absl would list none; under ``python -m tools.x`` absl files them under the
  script's path, which is also the main module) and exit 0, and adds ``--debug``;
* turns a flag absl cannot parse or validate, :class:`tfod.errors.BadInput` and ``absl`` usage
  errors into one line ``tfod-<tool>: error: <file>, row <row>: <reason>`` and exit 2, any
  other exception into one line and exit 1, with the traceback only under ``--debug``.

Every number flag has its range where it is defined (absl's ``lower_bound``/``upper_bound``,
:func:`require_positive`), and :func:`parse_flags` refuses ``nan`` and infinities of every
float flag, so a bad number stops a tool at parse time, naming the flag.

Quiet by default: a tool prints tfod's own lines (and every ERROR); TensorFlow's, absl's and
the OD API's INFO and WARNING lines, Python warnings included, go to the tool's log file
(:func:`log_file`), and show on the console too with ``--verbose``. TensorFlow's C++ logging
is set before TensorFlow starts (``TF_CPP_MIN_LOG_LEVEL`` at least 2 unless ``--verbose``), and
what it writes to file descriptor 2 anyway goes to the log file (:class:`_NativeStderr`), so
this module must be imported before TensorFlow: each ``tools/`` script imports it first.

Flag groups used by several tools are defined here once, as functions a tool calls at import
(absl flags are global, so each group is defined only in the processes that ask for it):
:func:`define_config_flags` (tfod-config, tfod-train).
"""
from __future__ import annotations

import importlib.metadata
import logging
import logging.handlers
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging

from tfod.errors import BAD_INPUT, FAILED, INTERRUPTED, BadInput, RunFailed
from tfod.runfolder import RunFolder

FLAGS = flags.FLAGS
_DEBUG = flags.DEFINE_bool("debug", False, "On an error, show the Python traceback.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Also show TensorFlow's, absl's and the OD API's "
                             "INFO and WARNING lines (they always go to the tool's log file).")


def tool_name() -> str:
    """The console script's name, also under ``python -m tools.<module>`` (as the demo runs
    the tools) when tfod is installed; else the script's file name."""
    if not (sys.argv and sys.argv[0]):
        return "tfod"
    script = Path(sys.argv[0])
    if script.suffix == ".py" and script.parent.name == "tools":
        wanted = f"tools.{script.stem}:run"
        for entry in importlib.metadata.entry_points(group="console_scripts"):
            if entry.value == wanted:
                return entry.name
    return script.name


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
            return fail("interrupted", INTERRUPTED)
        except RunFailed as error:  # its message says what failed and where the logs are
            if _DEBUG.value:
                traceback.print_exc()
            return fail(str(error), FAILED)
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


_HELP_FLAGS = ("-h", "--help", "-?", "--helpshort", "--helpfull", "--helpxml")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with tfod's convention: a bad flag is one line and exit 2; help
    (which absl ends with exit 1) exits 0. A number flag given ``nan`` or an infinity is
    refused, naming the flag (absl's bounds let ``nan`` through: it compares False)."""
    try:
        remaining = FLAGS(argv)
        refuse_non_finite()
        return remaining
    except flags.Error as error:
        sys.exit(fail(str(error), BAD_INPUT))
    except SystemExit as stop:
        if any(arg.split("=")[0] in _HELP_FLAGS for arg in argv[1:]):
            sys.exit(0)
        raise stop


def refuse_non_finite() -> None:
    """Raise :class:`absl.flags.IllegalFlagValueError` for a float flag given on the command
    line as ``nan``, ``inf`` or ``-inf``: no tool takes one."""
    for name in list(FLAGS):
        flag = FLAGS[name]
        if not flag.present or not isinstance(flag.parser, flags.FloatParser):
            continue
        values = flag.value if isinstance(flag.value, list) else [flag.value]
        for value in values:
            if value is not None and not math.isfinite(value):
                raise flags.IllegalFlagValueError(f"flag --{name}={value}: not a finite number")


def require_positive(*holders: flags.FlagHolder) -> None:
    """Refuse 0 and negative values of these number flags when they are parsed (absl's
    ``lower_bound`` lets its own value through)."""
    for holder in holders:
        flags.register_validator(holder.name, lambda value: value is None or value > 0,
                                 message="must be a positive number")


def runner(main: Callable[[list[str]], int | None]) -> Callable[[], None]:
    """The console script's entry point for a tool whose ``main`` is given."""

    def run() -> None:
        show_tool_flags_in_help(main.__module__)
        _filter_consoles()  # the handlers TensorFlow added when the tool imported it
        app.run(guarded(logged(main)), flags_parser=parse_flags)

    return run


# --------------------------------------------------------------------------- quiet by default


def _is_tool() -> bool:
    """Whether this process runs a tool (``tfod-<name>`` or ``python -m tools.<name>``)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return script.name.startswith("tfod-") or (
        script.suffix == ".py" and script.parent.name == "tools")


def _verbose_in(argv: Sequence[str]) -> bool:
    """``--verbose`` as absl will read it from ``argv``, for what must be set before parsing."""
    verbose = False
    for arg in argv[1:]:
        if arg == "--":
            break
        name, _, value = arg.lstrip("-").partition("=")
        if name == "verbose":
            verbose = value.lower() in ("", "true", "t", "1")
        elif name == "noverbose" and not value:
            verbose = False
    return verbose


def _shown(record: logging.LogRecord) -> bool:
    """On the console without ``--verbose``: every error, and tfod's own lines at the level its
    loggers ask for (WARNING unless one of them is set lower)."""
    verbose = _VERBOSE.value if FLAGS.is_parsed() else _verbose_in(sys.argv)
    if verbose or record.levelno >= logging.ERROR:
        return True
    if record.name.split(".")[0] != "tfod":
        return False
    logger = logging.getLogger(record.name)
    while logger.name.split(".")[0] == "tfod":
        if logger.level:
            return record.levelno >= logger.level
        logger = logger.parent
    return record.levelno >= logging.WARNING


def _filter_consoles() -> None:
    """Let the console handlers of the root and TensorFlow loggers show only :func:`_shown`."""
    for logger in (logging.getLogger(), logging.getLogger("tensorflow")):
        for handler in logger.handlers:
            if handler is not _EARLY and _shown not in handler.filters and (
                    not isinstance(handler, logging.FileHandler)):
                handler.addFilter(_shown)


class _LogFile(logging.FileHandler):
    """A log file whose folder is made at the first line; one that cannot be written is
    dropped with a note on the console, once."""

    def __init__(self, path: Path):
        super().__init__(path, delay=True)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        stream = super()._open()
        _NATIVE_STDERR.into(Path(self.baseFilename))
        return stream

    def emit(self, record) -> None:
        try:
            super().emit(record)
        except OSError:  # opening the file (logging only guards the write): dropped, not raised
            self.handleError(record)

    def handleError(self, record) -> None:
        logging.getLogger().removeHandler(self)
        print(f"{tool_name()}: cannot write the log file {self.baseFilename}", file=sys.stderr)


def log_file() -> Path:
    """A tool's log file: ``<run_dir>/logs/<tool>.log`` for a tool given an existing
    ``--run_dir``, else ``<output>.log`` beside its ``--output`` file or ``--output_dir``
    folder when that folder's parent exists, else ``<tmp>/<tool>-<uid>.log``: a log never creates a
    folder the tool was not yet sure to make, and a ``--dry_run`` writes nothing beside its
    outputs. Appended to by each run."""
    name = Path(tool_name()).stem
    given = {key: FLAGS[key].value for key in ("run_dir", "output", "output_dir") if key in FLAGS}
    if "dry_run" in FLAGS and FLAGS["dry_run"].value:
        given = {}
    if given.get("run_dir") and Path(given["run_dir"]).expanduser().is_dir():
        return RunFolder(given["run_dir"]).logs / f"{name}.log"
    for key in ("output", "output_dir"):
        if given.get(key) and Path(given[key]).expanduser().absolute().parent.is_dir():
            path = Path(given[key]).expanduser()
            return path.with_name(path.name + ".log")
    return Path(tempfile.gettempdir()) / f"{name}-{os.getuid()}.log"  # each user's own


def logged(main: Callable[[list[str]], int | None]) -> Callable[[list[str]], int | None]:
    """``main`` with the library's log records (INFO and up) written to :func:`log_file`,
    those from before the flags were parsed included."""

    def with_log(argv):
        root = logging.getLogger()
        root.setLevel(logging.INFO)  # absl set it from --verbosity when it parsed the flags
        handler = _LogFile(log_file())
        root.addHandler(handler)
        _filter_consoles()
        if _EARLY is not None:
            _EARLY.setTarget(handler)
            _EARLY.close()  # flushes the early records into the file
            root.removeHandler(_EARLY)
        try:
            return main(argv)
        finally:
            root.removeHandler(handler)
            handler.close()

    return with_log


class _NativeStderr:
    """File descriptor 2 of a quiet tool, where TensorFlow's C++ code logs: TensorFlow 2.21
    writes its lines from before ``absl::InitializeLog`` there whatever
    ``TF_CPP_MIN_LOG_LEVEL`` says. :meth:`divert` points it at an unnamed file; when the log
    file opens (at the tool's first log record), :meth:`into` appends what it held there and
    points it there too. A tool that logs nothing writes no log file: the start-up lines held
    go with the unnamed file. Python's ``sys.stderr`` (tfod's lines, progress bars, errors)
    keeps the console, and so do the tools a tool starts with ``stderr=sys.stderr``."""

    def __init__(self):
        self._held = None

    def divert(self) -> None:
        try:
            console = os.dup(2)
        except OSError:  # no descriptor 2: nothing to keep quiet
            return
        sys.stderr.flush()
        old = sys.stderr
        sys.stderr = open(console, "w", buffering=1, encoding=old.encoding,  # noqa: SIM115
                          errors="backslashreplace")
        for handler in _stream_handlers():
            if handler.stream is old:
                handler.setStream(sys.stderr)
        self._held = tempfile.TemporaryFile()
        os.dup2(self._held.fileno(), 2)

    def into(self, path: Path) -> None:
        if self._held is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:  # the log file's own handler says so; the held lines stay held
            return
        self._held.seek(0)
        os.write(log, self._held.read())
        os.dup2(log, 2)
        os.close(log)
        self._held.close()
        self._held = None


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = (logging.getLogger(), logging.getLogger("tensorflow"), logging.getLogger("absl"))
    handlers = [handler for logger in loggers for handler in logger.handlers]
    handlers.append(absl_logging.get_absl_handler().python_handler)
    return [handler for handler in handlers if isinstance(handler, logging.StreamHandler)]


_NATIVE_STDERR = _NativeStderr()


def _quiet_start() -> logging.Handler | None:
    """Before TensorFlow is imported: its C++ INFO and WARNING lines off (unless
    ``--verbose``), Python warnings into logging, and log records kept for the log file until
    the flags name it. Only in a tool's process: importing this module elsewhere changes
    nothing."""
    if not _is_tool():
        return None
    if not _verbose_in(sys.argv):
        level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(max(int(level) if level.isdigit() else 0, 2))
        logging.captureWarnings(True)
        _NATIVE_STDERR.divert()
    early = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    logging.getLogger().addHandler(early)
    absl_logging.get_absl_handler().addFilter(_shown)
    return early


_EARLY = _quiet_start()


def require(*holders: flags.FlagHolder) -> None:
    """Raise a usage error for the first of ``holders`` that was not given."""
    for holder in holders:
        if holder.value is None:
            raise app.UsageError(f"--{holder.name} is required")


def check_outputs(files: Sequence = (), folders: Sequence = ()) -> None:
    """Refuse, before any work, output flags (holders of the flags a tool writes: ``files``
    and ``folders``; unset ones are ignored) that cannot be written, with
    :class:`tfod.errors.BadInput` naming the path and the flag: two flags naming one path, a
    file that is a folder, a folder that is a file, a path under a file, or a path whose
    nearest existing folder does not take new files (permissions, a read-only file system)."""
    given: dict[Path, str] = {}
    for holder, kind in [(h, "file") for h in files] + [(h, "folder") for h in folders]:
        if not holder.value:
            continue
        path = Path(holder.value).expanduser().absolute()
        if path.resolve() in given:
            raise BadInput(f"--{holder.name} and --{given[path.resolve()]} name the same path: "
                           "one output would replace the other", holder.value)
        given[path.resolve()] = holder.name
        if path.is_dir() and kind == "file":
            raise BadInput(f"is a folder (--{holder.name} names a file to write)", path)
        if path.exists() and not path.is_dir() and kind == "folder":
            raise BadInput(f"is a file (--{holder.name} names a folder to write)", path)
        _check_writable_folder(next(p for p in path.parents if p.exists()), holder.name)


def _check_writable_folder(folder: Path, flag: str) -> None:
    if not folder.is_dir():
        raise BadInput(f"cannot write the output folder (a file is in the way) (--{flag})",
                       folder)
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise BadInput(f"cannot write the output folder ({error.strerror}) (--{flag})",
                       folder) from None


@dataclass(frozen=True)
class ConfigFlags:
    """The config flag group of :func:`define_config_flags`;
    :meth:`tfod.config.request.ConfigRequest.from_flags` reads it."""

    holders: dict[str, flags.FlagHolder]

    def __getattr__(self, name: str):
        try:
            return self.holders[name].value
        except KeyError:
            raise AttributeError(name) from None

    def values(self) -> dict:
        """Every flag of the group and its value (for a launch record)."""
        return {name: holder.value for name, holder in self.holders.items()}



def define_config_flags(models: Sequence[str], pipeline_config: bool = False) -> ConfigFlags:
    """Define the flags of a config request (``--model --data_dir --fold --image_size
    --batch_size --num_steps --learning_rate --fine_tune_checkpoint --override
    --augmentations --list_models``, and ``--pipeline_config`` when asked) once, for every
    tool that builds one.
    """
    holders = {
        "model": flags.DEFINE_enum("model", None, list(models), "Model to configure."),
        "data_dir": flags.DEFINE_string("data_dir", None, "A converted folder "
                                        "(label_map.pbtxt, fold*-*.tfrecord)."),
        "fold": flags.DEFINE_integer("fold", 0, "Evaluate on this fold and train on the others; "
                                     "-1 trains on all folds.", lower_bound=-1),
        "image_size": flags.DEFINE_integer("image_size", None, "Square input size in pixels "
                                           "(32..4096, checked by the config request).",
                                           lower_bound=1),
        "batch_size": flags.DEFINE_integer("batch_size", None, "Batch size; the learning rate "
                                           "scales with it unless --learning_rate is given.",
                                           lower_bound=1),
        "num_steps": flags.DEFINE_integer("num_steps", None, "Training steps; warm-up and "
                                          "schedule boundaries scale with them.", lower_bound=1),
        "learning_rate": flags.DEFINE_float("learning_rate", None, "Peak learning rate."),
        "fine_tune_checkpoint": flags.DEFINE_string(
            "fine_tune_checkpoint", None, "TF2 zoo checkpoint prefix or folder; its type "
            "(detection/classification) is detected."),
        "override": flags.DEFINE_multi_string(
            "override", [], "key=value of any pipeline proto field (repeatable), e.g. "
            "train_config.optimizer.momentum_optimizer.momentum_optimizer_value=0.8"),
        "augmentations": flags.DEFINE_list(
            "augmentations", None, "Keep only these of the model's data augmentation steps "
            "(e.g. random_horizontal_flip); 'none' keeps none; default: all of the model's."),
        "list_models": flags.DEFINE_bool("list_models", False,
                                         "Print the models and their defaults."),
    }
    require_positive(holders["learning_rate"])
    if pipeline_config:
        holders["pipeline_config"] = flags.DEFINE_string(
            "pipeline_config", None, "An existing pipeline.config to use (instead of --model).")
    return ConfigFlags(holders)
