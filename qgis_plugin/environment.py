"""Finding the mamol environment and running its commands: no QGIS import here.

By default a command runs in a subprocess of the configured environment (its ``mamol-map`` /
``mamol-train`` / ``mamol-info``), reading the JSON progress lines it prints; cancelling sends
its process group SIGINT, on which it deletes its partial outputs; one that does not stop within a
grace period is killed with every process it started, and their hidden ``.NAME.partial-PID`` files
are deleted here, as is the folder of finished blocks a stopped map keeps to continue from. Only
where no such executable is found and mamol imports cleanly in QGIS's own Python does the command
run in-process.
"""

from __future__ import annotations

import configparser
import contextlib
import dataclasses
import json
import logging
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable


class MamolNotFound(Exception):
    """No mamol executable is configured or on PATH, and mamol does not import here."""


class CommandFailed(Exception):
    """A mamol command stopped with an error; the message is its one-line explanation."""


class Canceled(Exception):
    """The user cancelled; the command was stopped and left no partial output."""


#: Variables QGIS sets for its own Python, PROJ and GDAL (OSGeo4W, the macOS bundle): mamol's environment
#: brings its own, which another PROJ database or GDAL plugin folder would break (PYTHONHOME stops its Python).
QGIS_OWN_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA", "GDAL_DRIVER_PATH")


def child_options() -> dict:
    """Keyword arguments for every process started in mamol's environment: QGIS's own settings left out
    of its environment and, on Windows, no console window (QGIS has none to share with it)."""
    options: dict = {"env": {k: v for k, v in os.environ.items() if k not in QGIS_OWN_VARIABLES}}
    if sys.platform == "win32":
        options["creationflags"] = subprocess.CREATE_NO_WINDOW
    return options


def find_tool(name: str, bin_dir: str | None) -> str | None:
    """Path of a mamol executable: in ``bin_dir`` when configured, else on PATH."""
    if bin_dir:
        for candidate in (Path(bin_dir) / name, Path(bin_dir) / f"{name}.exe"):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        return None
    return shutil.which(name)


def imports_in_process() -> bool:
    """Whether mamol can run inside this Python (it must import cleanly, torch included)."""
    try:
        import mamol_cli.map  # noqa: F401
        import mamol_core.mapping.mapper  # noqa: F401
    except Exception:  # any failure (missing package, ABI clash) means: not here
        return False
    return True


def describe_environment(bin_dir: str | None) -> str:
    tool = find_tool("mamol-map", bin_dir)
    if tool:
        return f"subprocess: {tool}"
    if imports_in_process():
        return "in-process (mamol imports in QGIS's Python)"
    return "not found"


SETUP_MENU = "Raster > MaMOL > Set up mamol environment…"


def not_found(bin_dir: str | None) -> MamolNotFound:
    where = f"in {bin_dir}" if bin_dir else "on PATH"
    return MamolNotFound(f"mamol was not found {where}: find or create its environment with {SETUP_MENU}")


def run_tool(name: str, argument: str, bin_dir: str | None, timeout: float) -> subprocess.CompletedProcess:
    """Run ``name argument`` of the environment in ``bin_dir`` (or on PATH). Raises
    :class:`MamolNotFound` when there is no such executable and :class:`CommandFailed` when it cannot be started."""
    tool = find_tool(name, bin_dir)
    if tool is None:
        raise not_found(bin_dir)
    try:
        return subprocess.run([tool, argument], capture_output=True, text=True, timeout=timeout, **child_options())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandFailed(f"{tool} does not run ({exc}); create a new environment with {SETUP_MENU}") from None


def tool_version(bin_dir: str | None, timeout: float = 120) -> str:
    """``mamol-map --version`` of the environment in ``bin_dir`` (or on PATH): proof that it runs and
    is this plugin's mamol release. Raises :class:`MamolNotFound` when there is no ``mamol-map`` and
    :class:`CommandFailed` when it does not run or is another release."""
    done = run_tool("mamol-map", "--version", bin_dir, timeout)
    if done.returncode != 0 or "version" not in done.stdout:
        raise CommandFailed(f"{done.args[0]} does not run ({last_error(done.stderr) or 'exit code ' + str(done.returncode)}); "
                            f"create a new environment with {SETUP_MENU}")
    mismatch = version_mismatch(done.stdout, done.args[0])
    if mismatch is not None:
        raise CommandFailed(mismatch)
    return done.stdout.strip()


def plugin_version() -> str:
    """This plugin's version (its metadata.txt): the mamol release it drives and ships as a wheel."""
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(Path(__file__).with_name("metadata.txt"), encoding="utf-8")
    return metadata.get("general", "version")


def version_mismatch(version_line: str, where: str) -> str | None:
    """Why the mamol at ``where`` (an executable, or QGIS's own Python), which reports
    ``version_line`` (``mamol-map, version X``), does not suit this plugin (another release: its
    options may differ from the ones the plugin passes), with the fix; ``None`` when the releases agree."""
    release = re.search(r"version\s+(\S+)\s*$", version_line)
    found, expected = release.group(1) if release else version_line.strip(), plugin_version()
    if found == expected:
        return None
    return (f"{where} is mamol {found}, but this plugin drives mamol {expected}; install the plugin's own with "
            f"{SETUP_MENU} (Create)")


def in_process_mismatch() -> str | None:
    """:func:`version_mismatch` of the mamol that QGIS's own Python imports (where it runs in-process)."""
    import mamol_core

    return version_mismatch(f"version {mamol_core.__version__}", "the mamol that QGIS's Python imports")


def environment_check(bin_dir: str | None, timeout: float = 300) -> str:
    """``mamol-info --check`` of the environment: it imports torch, rasterio, geopandas and open_clip
    (which ``--version`` does not), so a broken install shows here. Raises like :func:`tool_version`."""
    tool_version(bin_dir)
    done = run_tool("mamol-info", "--check", bin_dir, timeout)
    if done.returncode != 0:
        raise CommandFailed(f"{last_error(done.stderr) or 'mamol-info --check failed'}; create a new environment with {SETUP_MENU}")
    return done.stdout.strip()


def environment_problem(bin_dir: str | None) -> str | None:
    """What keeps mamol from running here (not found, broken, or another mamol release than this
    plugin's), in a sentence with the fix; ``None`` when it runs."""
    if find_tool("mamol-map", bin_dir) is None:
        return in_process_mismatch() if imports_in_process() else str(not_found(bin_dir))
    try:
        tool_version(bin_dir)
    except (MamolNotFound, CommandFailed) as exc:
        return str(exc)
    return None


def default_environment() -> Path:
    """Where the plugin creates a mamol environment: a per-user data folder that QGIS does not clean up."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "mamol" / "env"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "mamol" / "env"


def environment_bin(folder: Path) -> Path:
    """The folder of a virtual environment's executables."""
    return Path(folder) / ("Scripts" if sys.platform == "win32" else "bin")


def find_environments(bin_dir: str | None) -> list[str]:
    """Folders holding a ``mamol-map``: the configured one, ``$MAMOL_BIN_DIR``, the plugin's own
    environment, and the one on PATH, each once, in that order."""
    candidates = [bin_dir, os.environ.get("MAMOL_BIN_DIR"), str(environment_bin(default_environment()))]
    on_path = shutil.which("mamol-map")
    candidates.append(str(Path(on_path).parent) if on_path else None)
    found: dict[str, None] = {}
    for folder in candidates:
        if folder and find_tool("mamol-map", folder):
            found[str(Path(folder).resolve())] = None
    return list(found)


def base_python() -> str | None:
    """A Python to create environments with: this one when it is a Python executable (not the QGIS binary), else python3 on PATH."""
    if Path(sys.executable).name.lower().startswith("python"):
        return sys.executable
    return shutil.which("python3") or shutil.which("python")


def create_environment(folder: Path, requirement: list[str], on_line: Callable[[str], None], is_canceled: Callable[[], bool],
                       python: str | None = None) -> str:
    """Create a virtual environment in ``folder`` and ``pip install`` ``requirement`` into it (output
    lines go to ``on_line``; ``is_canceled`` stops it), then check it (:func:`environment_check`).
    Returns the environment's executables folder. A folder this call created is removed again when
    the creation fails or is cancelled; a failing check leaves the environment for inspection."""
    python = python or base_python()
    if python is None:
        raise CommandFailed("no Python was found to create the environment with; install Python 3.10 or newer")
    folder = Path(folder)
    fresh = not folder.exists()
    interpreter = environment_bin(folder) / ("python.exe" if sys.platform == "win32" else "python")
    steps = [("creating the environment", [python, "-m", "venv", str(folder)]),
             ("installing mamol and its dependencies", [str(interpreter), "-m", "pip", "install", "--disable-pip-version-check",
                                                         *requirement])]
    try:
        for title, command in steps:
            on_line(f"{title}: {command_line(command)}")
            _stream(title, command, on_line, is_canceled)
    except BaseException:
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    bin_dir = str(environment_bin(folder))
    on_line(environment_check(bin_dir))
    return bin_dir


def _stream(title: str, command: list[str], on_line: Callable[[str], None], is_canceled: Callable[[], bool]) -> None:
    """Run ``command`` (what it does: ``title``), handing each output line to ``on_line``; stop it when ``is_canceled``."""
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, **child_options())
    except OSError as exc:
        raise CommandFailed(f"{command[0]} cannot be started ({exc.strerror})") from None
    lines: "queue.Queue[tuple[str, str]]" = queue.Queue()
    reader = threading.Thread(target=_pump, args=(process.stdout, "out", lines), daemon=True)
    reader.start()
    tail: list[str] = []
    while process.poll() is None or not lines.empty() or reader.is_alive():
        try:
            _, line = lines.get(timeout=0.1)
        except queue.Empty:
            line = None
        if line:
            tail = (tail + [line])[-5:]
            on_line(line)
        if is_canceled() and process.poll() is None:
            process.kill()
            process.wait()
            raise Canceled("cancelled")
    if process.returncode != 0:
        raise CommandFailed(f"{title} failed: {tail[-1] if tail else 'no output'}")


def model_info(model: str, bin_dir: str | None) -> dict:
    """The configuration embedded in a model file, as a dict (modalities, classes, ...)."""
    tool = find_tool("mamol-info", bin_dir)
    if tool:
        try:
            done = subprocess.run([tool, str(model), "--json"], capture_output=True, text=True, timeout=120, **child_options())
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CommandFailed(f"{tool} does not run ({exc}); create a new environment with {SETUP_MENU}") from None
        if done.returncode != 0:
            raise CommandFailed(last_error(done.stderr) or f"mamol-info failed on {model}")
        return json.loads(done.stdout)
    if imports_in_process():
        from mamol_core.errors import MamolError
        from mamol_core.modelfile.header import read_config

        try:
            return dataclasses.asdict(read_config(model))
        except MamolError as exc:
            raise CommandFailed(str(exc)) from None
    raise not_found(bin_dir)


def last_error(stderr: str) -> str:
    """The command's one-line error (``error: ...``), else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    return lines[-1] if lines else ""


def run_command(tool: str, args: list[str], bin_dir: str | None, on_progress: Callable[[dict], None],
                is_canceled: Callable[[], bool], on_log: Callable[[str], None]) -> None:
    """Run ``tool`` (``mamol-map`` or ``mamol-train``) with ``args`` to completion.

    Raises :class:`Canceled`, :class:`CommandFailed` or :class:`MamolNotFound`."""
    executable = find_tool(tool, bin_dir)
    if executable:
        _run_subprocess([executable, *args, "--progress", "json"], on_progress, is_canceled, on_log)
    elif imports_in_process():
        _run_in_process(tool, args, on_progress, is_canceled, on_log)
    else:
        raise not_found(bin_dir)


def _pump(stream, name: str, lines: "queue.Queue[tuple[str, str]]") -> None:
    for line in iter(stream.readline, ""):
        lines.put((name, line.rstrip("\n")))
    stream.close()


def _run_subprocess(command: list[str], on_progress, is_canceled, on_log, grace: float = 10.0) -> None:
    """Run ``command`` in a process group of its own; progress records and log lines are handed on
    from this (the caller's) thread. Cancelling interrupts the whole group (a launcher and the
    Python it starts alike) and, past ``grace`` seconds, kills it and deletes the partial files its
    processes left."""
    options = child_options()
    if sys.platform == "win32":
        options["creationflags"] |= subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        options["start_new_session"] = True
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, **options)
    lines: "queue.Queue[tuple[str, str]]" = queue.Queue()
    readers = [threading.Thread(target=_pump, args=(process.stdout, "out", lines), daemon=True),
               threading.Thread(target=_pump, args=(process.stderr, "err", lines), daemon=True)]
    for reader in readers:
        reader.start()
    errors: list[str] = []
    writers = {process.pid}  # the processes whose partial files a kill may leave (a launcher's child reports its own)

    def drain() -> None:
        while True:
            try:
                stream, line = lines.get_nowait()
            except queue.Empty:
                return
            if stream == "out" and line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    pass
                else:
                    if isinstance(record.get("pid"), int):
                        writers.add(record["pid"])
                    on_progress(record)
                    continue
            if stream == "err":
                errors.append(line)
            if line.strip() and "\r" not in line and not (stream == "err" and line.startswith("error:")):
                on_log(line)  # the one-line error is raised as CommandFailed, shown once

    while process.poll() is None:
        drain()
        if is_canceled():
            deadline = time.monotonic() + (grace if _interrupt_group(process) else 0.0)
            while _group_alive(process) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _group_alive(process):
                _kill_group(process)
                for reader in readers:
                    reader.join(timeout=2)
                drain()
                remove_partials(command[1:], writers)
            remove_block_folders(command[1:], writers)
            raise Canceled("cancelled: no output was written")
        time.sleep(0.05)
    for reader in readers:
        reader.join(timeout=5)
    drain()
    if process.returncode != 0:
        raise CommandFailed(last_error("\n".join(errors)) or f"{Path(command[0]).name} exited with code {process.returncode}")


def _interrupt_group(process: subprocess.Popen) -> bool:
    """Ctrl-C (SIGINT) to every process of ``process``'s group; False where none can be sent (on Windows
    mamol runs without a console, which Ctrl-Break needs: it is then killed at once)."""
    if sys.platform == "win32":  # mamol runs without a console (child_options): no Ctrl-Break reaches it
        return False
    try:
        os.killpg(process.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    except OSError:
        return False
    return True


def _group_alive(process: subprocess.Popen) -> bool:
    """Whether ``process`` or, on POSIX, any process of its group still runs (a launcher may be gone
    while the Python it started is still writing)."""
    if process.poll() is None:
        return True
    if sys.platform == "win32":
        return False
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(process: subprocess.Popen) -> None:
    """Kill ``process`` and every process it started (its group; its tree on Windows) and reap it."""
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, **child_options())
        process.kill()
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def remove_partials(args: list[str], pids: set[int]) -> list[Path]:
    """Delete the hidden ``.NAME.partial-PID…`` files that the processes ``pids`` left, killed before
    they could clean up, beside and inside the paths among a command's ``args`` (``-o FILE``,
    ``NAME=FILE``, a report folder). Returns what was deleted; a file that cannot be deleted is left."""
    paths = {Path(value) for arg in args if not arg.startswith("-") for value in (arg, arg.split("=", 1)[-1])}
    folders = {p.parent for p in paths} | paths
    removed = []
    for folder in sorted(f for f in folders if _is_folder(f)):
        for pid in sorted(pids):
            for leftover in folder.glob(f".*.partial-{pid}*"):
                if leftover.name.split(f".partial-{pid}", 1)[1][:1] not in ("", "."):  # the pid's longer namesakes
                    continue
                try:
                    if leftover.is_dir():
                        shutil.rmtree(leftover)
                    else:
                        leftover.unlink(missing_ok=True)
                except OSError:
                    continue
                removed.append(leftover)
    return removed


def command_line(parts: list[str]) -> str:
    """``parts`` as one line to copy into this system's shell: paths with spaces or quotes quoted."""
    return subprocess.list2cmdline(parts) if sys.platform == "win32" else shlex.join(parts)


def remove_block_folders(args: list[str], writers: set[int]) -> None:
    """Delete the hidden ``.NAME.blocks`` folder that a stopped ``mamol-map -o NAME`` keeps for the same command to
    continue from, and the ``.NAME.blocks.lock`` file that a killed one leaves: a cancel in QGIS leaves nothing (its
    temporary outputs get a new name on every run anyway). Both stay where the lock names a process other than
    ``writers`` (the cancelled run's): another run maps into that output now."""
    for flag, value in zip(args, args[1:]):
        if flag in ("-o", "--output"):
            folder = Path(value).with_name(f".{Path(value).name}.blocks")
            lock = folder.with_name(f"{folder.name}.lock")
            try:
                holder = lock.read_text().strip()
            except (OSError, ValueError):
                holder = ""
            if holder.isdigit() and int(holder) not in writers:
                continue
            if _is_folder(folder):
                shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                lock.unlink()


def _is_folder(path: Path) -> bool:
    """``path.is_dir()``, false for an argument that cannot name a file (too long, say)."""
    try:
        return path.is_dir()
    except OSError:
        return False


class _WarningsTo(logging.Handler):
    """Hands what mamol, run in this process with ``--quiet``, logs on as the command line prints it
    (warnings after ``warning: ``, results as they are)."""

    def __init__(self, on_log: Callable[[str], None]) -> None:
        from mamol_cli.common import MessageFormat

        super().__init__(logging.WARNING)
        self.setFormatter(MessageFormat())
        self.on_log = on_log

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.WARNING:
            self.on_log(self.format(record))


def _run_in_process(tool: str, args: list[str], on_progress, is_canceled, on_log) -> None:
    import importlib

    from mamol_core.errors import MamolError

    module = importlib.import_module({"mamol-map": "mamol_cli.map", "mamol-train": "mamol_cli.train",
                                      "mamol-eval": "mamol_cli.evaluate"}[tool])

    def sink(record: dict) -> None:
        if is_canceled():
            raise Canceled("cancelled: no output was written")
        on_progress(record)

    handler, loggers = _WarningsTo(on_log), [logging.getLogger(name) for name in ("mamol", "mamol_core")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # whatever level QGIS or another plugin gave the root logger
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
    try:
        module.main.main(args=args + ["--quiet"], standalone_mode=False, obj={"progress": sink, "raise": True})
    except MamolError as exc:
        raise CommandFailed(str(exc)) from None
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)
