"""What every mamol command shares: logging, one-line errors, clean Ctrl-C, common options."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import warnings
from typing import Callable, Iterator

import click

from mamol_core.atomic import finished_outputs, forget_finished
from mamol_core.errors import MamolError, PeerStopped, Terminated, handling_signals, signal_exception
from mamol_core.progress import MODES

log = logging.getLogger("mamol")


#: ``extra`` of a log call that gives the command's result: logged at WARNING so that ``--quiet`` keeps
#: it, but not marked as a warning.
RESULT = {"result": True}


class MessageFormat(logging.Formatter):
    """A message as it is, a warning after ``warning: `` (as errors follow ``error: ``; a result logged
    at WARNING to survive ``--quiet`` is no warning)."""

    def __init__(self) -> None:
        super().__init__("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"warning: {text}" if record.levelno == logging.WARNING and not getattr(record, "result", False) else text


def setup_logging(quiet: bool) -> None:
    """Messages on stderr, one per line: mamol's at INFO (WARNING with ``quiet``), warnings marked
    ``warning:``; GDAL's own error reports (logged by rasterio at INFO) and pyogrio's record counts
    are left out, since mamol turns each failure into one line and says what it wrote; so is torch's
    INFO (its loggers inherit the root's level until torch has set up its own logging, so a command
    stopped while torch loads printed torch's cache statistics at exit), and matplotlib's ("generated new
    fontManager" on a fresh account, in QGIS's log too). So is rasterio's warning about
    a raster without a geotransform, and about writing one (the map of such rasters has none either):
    mamol says itself what such a raster lacks and what to do."""
    warnings.filterwarnings("ignore", message="Dataset has no geotransform")
    warnings.filterwarnings("ignore", message="The given matrix is equal to Affine.identity")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MessageFormat())
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, handlers=[handler])
    for library in ("rasterio", "pyogrio", "torch", "matplotlib"):
        logging.getLogger(library).setLevel(logging.WARNING)


class _Kept(logging.Handler):
    """Keeps the messages of mamol's warnings in a list."""

    def __init__(self, kept: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.kept = kept

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("mamol"):
            try:
                self.kept.append(record.getMessage())
            except Exception:  # a log call whose arguments do not fit its format: reported as logging reports it
                self.handleError(record)


@contextlib.contextmanager
def warnings_kept() -> Iterator[list[str]]:
    """The messages of the warnings mamol logs while the block runs (for a report to record what was
    said about its inputs); they are shown as ever."""
    kept: list[str] = []
    handler = _Kept(kept)
    logging.getLogger().addHandler(handler)
    try:
        yield kept
    finally:
        logging.getLogger().removeHandler(handler)


class _OneLineUsageError(click.UsageError):
    """A usage error shown as one line (``error: ...``), as mamol's own errors are."""

    def show(self, file=None) -> None:
        name = self.ctx.command_path if self.ctx is not None else "the command"
        click.echo(f"error: {self.format_message()} (see {name} --help)", err=True)


#: click's "no arguments: show the help" signal (click 8.2 and newer), which stays as it is.
_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _OneLineUsage:
    """Turns a usage error raised while parsing the command line into a :class:`_OneLineUsageError`, and
    Ctrl-C or SIGTERM from the start (an option's check may import for a while) into the commands' own
    message and exit status (click said "Aborted!" and exited 1; SIGTERM ended the process unsaid)."""

    def main(self, *args, **kwargs):
        _RECEIVED.clear()
        with signals_raised():
            return super().main(*args, **kwargs)

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except (Exception, KeyboardInterrupt) as exc:
            stopped = interruption(exc)
            obj = extra.get("obj", parent.obj if parent is not None else None)  # a group's subcommand gets its parent's
            if stopped is not None and not (obj if isinstance(obj, dict) else {}).get("raise"):
                stop_interrupted(stopped)
            if isinstance(exc, click.UsageError) and not isinstance(exc, _HELP):
                raise _OneLineUsageError(exc.format_message(), exc.ctx) from None
            raise

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise _OneLineUsageError(exc.format_message(), exc.ctx) from None


class Command(_OneLineUsage, click.Command):
    """A click command whose usage errors (an unknown option, a value out of range) print one line."""


class Group(_OneLineUsage, click.Group):
    """A click group of :class:`Command` subcommands; an unknown subcommand is one line as well."""

    command_class = Command


COMMAND_SETTINGS = {"help_option_names": ["-h", "--help"]}


def seconds_text(seconds: float) -> str:
    """Seconds for a log line: ``12.3``, or three figures under 10 s (``0.0412``), never a bare ``0.0``."""
    return f"{seconds:.1f}" if seconds >= 10 else f"{seconds:.3g}"


def embedding() -> dict:
    """Settings of a caller that runs a command in its own process (the QGIS plugin):
    ``main.main(args, standalone_mode=False, obj={"progress": sink, "raise": True})``. ``progress``
    receives every progress record; ``raise`` lets errors propagate instead of exiting."""
    context = click.get_current_context(silent=True)
    return context.obj if context is not None and isinstance(context.obj, dict) else {}


def progress_sink(progress_mode: str):
    """The progress mode to use: the embedding caller's sink when there is one."""
    return embedding().get("progress", progress_mode)


#: The Ctrl-C and SIGTERM signals this command received (an interruption inside a lazy import can surface
#: as another error, numpy's RecursionError say, which is then still an interruption).
_RECEIVED: list[int] = []


def _on_signal(signum, frame) -> None:
    _RECEIVED.append(signum)
    raise signal_exception(signum)


@contextlib.contextmanager
def signals_raised() -> Iterator[None]:
    """On the main thread, Ctrl-C raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated` while the
    block runs (a process started in the background by a script inherits SIGINT ignored, and Ctrl-C or a
    stop button must still end it cleanly); the handlers before are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with handling_signals(_on_signal):
        yield


def interruption(exc: BaseException) -> KeyboardInterrupt | None:
    """The interruption ``exc`` stands for: itself if it is one, another error raised after Ctrl-C or
    SIGTERM reached this command (an import it broke), else None."""
    if isinstance(exc, KeyboardInterrupt):
        return exc
    return signal_exception(_RECEIVED[-1]) if _RECEIVED else None


def stop_interrupted(exc: KeyboardInterrupt) -> None:
    """Say what the interruption left behind (under torchrun only rank 0 does) and exit 143 for
    SIGTERM, 130 for Ctrl-C."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or os.environ.get("RANK", "0") == "0":
        click.echo(interruption_message(exc), err=True)
    sys.exit(143 if isinstance(exc, Terminated) else 130)


def interruption_message(exc: KeyboardInterrupt) -> str:
    """What an interruption left behind: the outputs finished before it, or nothing."""
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    kept = finished_outputs()
    if not kept:
        return f"{what}: nothing was written"
    return f"{what}: kept {', '.join(str(p) for p in kept)} (complete); nothing else was written"


def handle_errors(command: Callable) -> Callable:
    """Turn :class:`MamolError` into ``error: ...`` on one line (exit 1), Ctrl-C into exit 130 and
    SIGTERM into exit 143, each saying which outputs were completed before."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        forget_finished()
        with signals_raised():
            try:
                return command(*args, **kwargs)
            except (Exception, KeyboardInterrupt) as exc:
                if embedding().get("raise"):
                    raise
                stopped = interruption(exc)
                if stopped is not None:
                    stop_interrupted(stopped)
                if not isinstance(exc, MamolError):
                    raise
                if not isinstance(exc, PeerStopped):  # under torchrun the rank that failed says why
                    click.echo(f"error: {exc}", err=True)
                sys.exit(1)

    return wrapper


def _known_backbones(names: list[str], value: str) -> str:
    from mamol_core.backbones import check_backbone_name

    try:
        for name in names:
            check_backbone_name(name)
    except MamolError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def backbone_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--backbone`` callback: a name no backbone answers to is refused before any data is read."""
    return _known_backbones([value], value)


def split(text: str) -> list[str]:
    """The non-empty parts of a comma-separated option value, stripped."""
    return [part.strip() for part in text.split(",") if part.strip()]


def backbone_names(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--backbones`` callback: the same for each comma-separated name, and at least one."""
    if not split(value):
        raise click.BadParameter("give at least one backbone, e.g. minilm-l6@3,vit-b-16-random")
    return _known_backbones(split(value), value)


def device_options(command: Callable) -> Callable:
    """``--device`` and ``--precision``."""
    command = click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
                           help="Autocast precision: auto = bf16 on GPUs and on CPUs with native bf16, else fp32.")(command)
    return click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")(command)


def layout_options(command: Callable) -> Callable:
    """``--patch-size``, ``--token-size``, ``--tokenizer-hidden`` and ``--encoding`` (the model's token layout)."""
    from mamol_core.config import ENCODINGS, LayoutSpec

    command = click.option("--tokenizer-hidden", type=click.IntRange(min=1), default=LayoutSpec.hidden, show_default=True,
                           help="Width of each sensor's per-pixel convolution in its tokenizer.")(command)
    command = click.option("--encoding", type=click.Choice(ENCODINGS), default=LayoutSpec.encoding, show_default=True,
                           help="separate: one backbone sequence per sensor, fused at the head; joint: one sequence per "
                                "sample with the tokens of its present sensors, which attend to each other.")(command)
    command = click.option("--token-size", type=click.IntRange(min=1), default=LayoutSpec.token_size, show_default=True,
                           help="Pixels per token side; the head predicts all of a token's pixels.")(command)
    return click.option("--patch-size", type=click.IntRange(min=1), default=LayoutSpec.patch_size, show_default=True,
                        help="Patch (and mapping tile) side in pixels, a multiple of --token-size.")(command)


def progress_option(command: Callable) -> Callable:
    return click.option("--progress", "progress_mode", type=click.Choice(MODES), default="bar", show_default=True,
                        help="bar: a progress bar on stderr; json: one JSON line per update on stdout (for programs).")(command)


def quiet_option(command: Callable) -> Callable:
    return click.option("--quiet", is_flag=True, help="Fewer messages on stderr: warnings, errors and a map's line naming what it "
                                                      "wrote (a progress bar stays where the command has --progress: --progress "
                                                      "none hides it).")(command)
