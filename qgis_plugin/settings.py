"""Plugin settings (QgsSettings): where the mamol environment is and which model files are known."""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import QgsSettings

KEY = "mamol"
#: Extra model files or folders for the provider, separated by os.pathsep (handy for qgis_process).
MODELS_ENV = "MAMOL_QGIS_MODELS"
#: Folder of the mamol executables when the plugin setting is empty (handy for qgis_process).
BIN_ENV = "MAMOL_BIN_DIR"


def bin_dir() -> str | None:
    """Folder of the configured mamol executables (setting, else $MAMOL_BIN_DIR); None means: look on PATH."""
    value = QgsSettings().value(f"{KEY}/bin_dir", "", type=str)
    return value or os.environ.get(BIN_ENV) or None


def set_bin_dir(folder: str | None) -> None:
    QgsSettings().setValue(f"{KEY}/bin_dir", folder or "")


def known_models() -> list[str]:
    """Model files from $MAMOL_QGIS_MODELS (files, or folders of *.safetensors), then those the plugin
    remembers, in the order they were added (which decides whose mapping id gets a suffix when names repeat)."""
    entries = [e for e in os.environ.get(MODELS_ENV, "").split(os.pathsep) if e]
    entries += list(QgsSettings().value(f"{KEY}/models", [], type=list) or [])
    found: dict[str, None] = {}
    for entry in entries:
        path = Path(entry)
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        for file in files:
            if file.is_file():
                found[str(file.resolve())] = None
    return list(found)


def remember_model(path: str) -> None:
    models = list(QgsSettings().value(f"{KEY}/models", [], type=list) or [])
    resolved = str(Path(path).resolve())
    if resolved not in models:
        QgsSettings().setValue(f"{KEY}/models", models + [resolved])


def forget_model(path: str) -> None:
    """Stop offering the model ``path`` (the file itself is left alone)."""
    resolved = str(Path(path).resolve())
    models = [m for m in list(QgsSettings().value(f"{KEY}/models", [], type=list) or []) if str(Path(m).resolve()) != resolved]
    QgsSettings().setValue(f"{KEY}/models", models)


def remember_report(model: str, folder: str) -> None:
    """Where the training report of the model file ``model`` was written when not beside it (the dialog's folder)."""
    QgsSettings().setValue(f"{KEY}/reports/{_key(model)}", str(Path(folder).resolve()))


def report_folder(model: str) -> str | None:
    """The folder :func:`remember_report` recorded for ``model``, if any."""
    return QgsSettings().value(f"{KEY}/reports/{_key(model)}", "", type=str) or None


def _key(model: str) -> str:
    """A settings key for a model file's path (QgsSettings keys take no slashes within a name)."""
    return str(Path(model).resolve()).replace("/", "|").replace("\\", "|")
