"""Build the QGIS plugin ZIP that "Install from ZIP" accepts: dist/mamol_qgis-<version>.zip holding mamol_qgis/."""

from __future__ import annotations

import configparser
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "qgis_plugin"
PACKAGE = "mamol_qgis"


def build(destination: Path = ROOT / "dist") -> Path:
    metadata = configparser.ConfigParser()
    metadata.read(SOURCE / "metadata.txt")
    version = metadata["general"]["version"]
    destination.mkdir(parents=True, exist_ok=True)
    target = destination / f"{PACKAGE}-{version}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(SOURCE.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                archive.write(path, f"{PACKAGE}/{path.relative_to(SOURCE)}")
    return target


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist"))
