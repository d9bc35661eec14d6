"""Finding the mamol environment and running its commands: no QGIS import here.

By default a command runs in a subprocess of the configured environment (its ``mamol-map`` /
``mamol-train`` / ``mamol-info``), reading the JSON progress lines it prints; cancelling sends
it SIGINT, on which it deletes its partial outputs. Only where no such executable is found and
mamol imports cleanly in QGIS's own Python does the command run in-process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

TOOLS = ("mamol-map", "mamol-train", "mamol-info")


class MamolNotFound(Exception):
    """No mamol executable is configured or on PATH, and mamol does not import here."""


class CommandFailed(Exception):
    """A mamol command stopped with an error; the message is its one-line explanation."""


class Canceled(Exception):
    """The user cancelled; the command was stopped and left no partial output."""


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


def not_found(bin_dir: str | None) -> MamolNotFound:
    where = f"in {bin_dir}" if bin_dir else "on PATH"
    return MamolNotFound(f"mamol was not found {where}: install it (pip install mamol) and set its folder in "
                         f"Plugins > MaMOL > Set mamol environment")


def model_info(model: str, bin_dir: str | None) -> dict:
    """The configuration embedded in a model file, as a dict (modalities, classes, ...)."""
    tool = find_tool("mamol-info", bin_dir)
    if tool:
        done = subprocess.run([tool, str(model), "--json"], capture_output=True, text=True, timeout=120)
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
        _run_in_process(tool, args, on_progress, is_canceled)
    else:
        raise not_found(bin_dir)


def _pump(stream, name: str, lines: "queue.Queue[tuple[str, str]]") -> None:
    for line in iter(stream.readline, ""):
        lines.put((name, line.rstrip("\n")))
    stream.close()


def _run_subprocess(command: list[str], on_progress, is_canceled, on_log, grace: float = 10.0) -> None:
    """Run ``command``; progress records and log lines are handed on from this (the caller's) thread."""
    flags = subprocess.CREATE_NEW_PROCESS_GROUP if sys.platform == "win32" else 0
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, creationflags=flags)
    lines: "queue.Queue[tuple[str, str]]" = queue.Queue()
    readers = [threading.Thread(target=_pump, args=(process.stdout, "out", lines), daemon=True),
               threading.Thread(target=_pump, args=(process.stderr, "err", lines), daemon=True)]
    for reader in readers:
        reader.start()
    errors: list[str] = []

    def drain() -> None:
        while True:
            try:
                stream, line = lines.get_nowait()
            except queue.Empty:
                return
            if stream == "out" and line.startswith("{"):
                try:
                    on_progress(json.loads(line))
                    continue
                except ValueError:
                    pass
            if stream == "err":
                errors.append(line)
            if line.strip() and "\r" not in line:
                on_log(line)

    while process.poll() is None:
        drain()
        if is_canceled():
            process.send_signal(signal.CTRL_BREAK_EVENT if sys.platform == "win32" else signal.SIGINT)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise Canceled("cancelled: no output was written")
        time.sleep(0.05)
    for reader in readers:
        reader.join(timeout=5)
    drain()
    if process.returncode != 0:
        raise CommandFailed(last_error("\n".join(errors)) or f"{Path(command[0]).name} exited with code {process.returncode}")


def _run_in_process(tool: str, args: list[str], on_progress, is_canceled) -> None:
    import importlib

    from mamol_core.errors import MamolError

    module = importlib.import_module({"mamol-map": "mamol_cli.map", "mamol-train": "mamol_cli.train"}[tool])

    def sink(record: dict) -> None:
        if is_canceled():
            raise Canceled("cancelled: no output was written")
        on_progress(record)

    try:
        module.main.main(args=args + ["--quiet"], standalone_mode=False, obj={"progress": sink, "raise": True})
    except MamolError as exc:
        raise CommandFailed(str(exc)) from None
