"""What every ``tools/`` script shares: how it starts, how it fails, and flag groups.

Each tool is ``def main(argv) -> int`` plus ``run = cli.runner(main)``. :func:`runner`:

* makes ``--help`` list the tool's own flags (a console script's main module is the setuptools
  wrapper, so absl would list none; under ``python -m tools.x`` absl files them under the
  script's path, which is also the main module) and exit 0, and adds ``--debug``;
* turns a flag absl cannot parse or validate, :class:`tfod.errors.BadInput` and ``absl`` usage
  errors into one line ``tfod-<tool>: error: <file>, row <row>: <reason>`` and exit 2, any
  other exception into one line and exit 1, with the traceback only under ``--debug``.

Quiet by default: a tool prints tfod's own lines (and every ERROR); TensorFlow's, absl's and
the OD API's INFO and WARNING lines, Python warnings included, go to the tool's log file
(:func:`log_file`), and show on the console too with ``--verbose``. TensorFlow's C++ logging
is set before TensorFlow starts (``TF_CPP_MIN_LOG_LEVEL`` at least 2 unless ``--verbose``), so
this module must be imported before TensorFlow: each ``tools/`` script imports it first.

Flag groups used by several tools are defined here once, as functions a tool calls at import
(absl flags are global, so each group is defined only in the processes that ask for it):
:func:`define_config_flags` (tfod-config, tfod-train).
"""
from __future__ import annotations

import importlib.metadata
import logging
import logging.handlers
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging

from tfod.errors import BAD_INPUT, FAILED, BadInput, RunFailed
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
            return fail("interrupted", FAILED)
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
    (which absl ends with exit 1) exits 0."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        sys.exit(fail(str(error), BAD_INPUT))
    except SystemExit as stop:
        if any(arg.split("=")[0] in _HELP_FLAGS for arg in argv[1:]):
            sys.exit(0)
        raise stop


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
        return super()._open()

    def handleError(self, record) -> None:
        logging.getLogger().removeHandler(self)
        print(f"{tool_name()}: cannot write the log file {self.baseFilename}", file=sys.stderr)


def log_file() -> Path:
    """A tool's log file: ``<run_dir>/logs/<tool>.log`` for a tool given ``--run_dir``, else
    ``<output>.log`` beside its ``--output`` file or ``--output_dir`` folder, else
    ``<tmp>/<tool>.log``. Appended to by each run."""
    name = Path(tool_name()).stem
    given = {key: FLAGS[key].value for key in ("run_dir", "output", "output_dir") if key in FLAGS}
    if given.get("run_dir"):
        return RunFolder(given["run_dir"]).logs / f"{name}.log"
    for key in ("output", "output_dir"):
        if given.get(key):
            path = Path(given[key]).expanduser()
            return path.with_name(path.name + ".log")
    return Path(tempfile.gettempdir()) / f"{name}.log"


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


@dataclass(frozen=True)
class ConfigFlags:
    """The config flag group of :func:`define_config_flags`; :meth:`request` reads it."""

    holders: dict[str, flags.FlagHolder]

    def __getattr__(self, name: str):
        try:
            return self.holders[name].value
        except KeyError:
            raise AttributeError(name) from None

    def values(self) -> dict:
        """Every flag of the group and its value (for a launch record)."""
        return {name: holder.value for name, holder in self.holders.items()}

    def request(self):
        """The :class:`tfod.config.pipeline.ConfigRequest` the flags ask for."""
        from tfod.config.pipeline import ConfigRequest  # TensorFlow: only when a tool builds

        if "pipeline_config" not in self.holders:
            require(self.holders["model"], self.holders["data_dir"])
        elif self.pipeline_config and not self.model:  # resume a run's config as it was
            return ConfigRequest(pipeline_config=self.pipeline_config, num_steps=self.num_steps)
        return ConfigRequest(  # checks that --model and --pipeline_config are not both given
            model=self.model, data_dir=self.data_dir, fold=self.fold,
            image_size=self.image_size, batch_size=self.batch_size, num_steps=self.num_steps,
            learning_rate=self.learning_rate, fine_tune_checkpoint=self.fine_tune_checkpoint,
            overrides=self.override, pipeline_config=self.values().get("pipeline_config"),
            augmentations=self.augmentations)


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
        "image_size": flags.DEFINE_integer("image_size", None, "Square input size in pixels."),
        "batch_size": flags.DEFINE_integer("batch_size", None, "Batch size; the learning rate "
                                           "scales with it unless --learning_rate is given."),
        "num_steps": flags.DEFINE_integer("num_steps", None, "Training steps; warm-up and "
                                          "schedule boundaries scale with them."),
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
    if pipeline_config:
        holders["pipeline_config"] = flags.DEFINE_string(
            "pipeline_config", None, "An existing pipeline.config to use (instead of --model).")
    return ConfigFlags(holders)
