"""Build the QGIS plugin ZIP that "Install from ZIP" accepts: dist/mamol_qgis-<version>.zip holding mamol_qgis/."""

from __future__ import annotations

import configparser
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "qgis_plugin"
PACKAGE = "mamol_qgis"


def mamol_wheel(folder: Path) -> Path:
    """A wheel of mamol itself (no dependencies) built into ``folder``: the set-up window installs it."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(folder), str(ROOT)],
                   check=True, capture_output=True)
    return next(folder.glob("mamol-*.whl"))


def build(destination: Path = ROOT / "dist", wheel: bool = True) -> Path:
    """The plugin ZIP; with ``wheel``, mamol's own wheel inside it (``mamol_qgis/wheels/``)."""
    metadata = configparser.ConfigParser()
    metadata.read(SOURCE / "metadata.txt")
    version = metadata["general"]["version"]
    destination.mkdir(parents=True, exist_ok=True)
    target = destination / f"{PACKAGE}-{version}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(SOURCE.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                archive.write(path, f"{PACKAGE}/{path.relative_to(SOURCE)}")
        if wheel:
            with tempfile.TemporaryDirectory() as folder:
                built = mamol_wheel(Path(folder))
                archive.write(built, f"{PACKAGE}/wheels/{built.name}")
    return target


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist"))
