"""Make the bundled sample: a synthetic two-sensor scene and a model trained on it.

Writes into FOLDER (default sample_data/): hsi.tif (24-band hyperspectral-like cube, uint16
reflectance x 10000), dsm.tif (float32 heights), train_points.gpkg and test_polygons.gpkg (vector
ground truth, field 'landcover'), the same as label rasters, classes.json, and sample_model.safetensors
trained with mamol-train on the points (modalities 'hsi' and 'lidar') with its accuracy report.
Some classes differ only by height and others only by spectrum, so both sensors matter. The cube's
bands are described by (invented) wavelengths and the DSM declares its unit, metres, as real rasters
often do, so that the model records them and mapping can tell bands in another order or heights in feet.

    python scripts/make_sample_data.py [FOLDER] [--scene-only]
"""

import shutil
import subprocess
import sys
from pathlib import Path

import rasterio

from mamol_core.data.synthetic import write_scene

TRAIN = ["--missing-rate", "0.5", "--missing", "both", "--backbone", "minilm-l6",
         "--seed", "0", "--progress", "none"]


def main(folder: Path, scene_only: bool) -> None:
    write_scene(folder, 160, 160, bands=24, fields=50, per_field=12, seed=7, vector=True)
    describe_bands(folder)
    print(f"sample scene written to {folder}")
    if scene_only:
        return
    model = folder / "sample_model.safetensors"
    train = shutil.which("mamol-train", path=str(Path(sys.executable).parent)) or "mamol-train"
    subprocess.run([train, "--input", f"hsi={folder / 'hsi.tif'}", "--input", f"lidar={folder / 'dsm.tif'}",
                    "--labels", str(folder / "train_points.gpkg"), "--label-field", "landcover",
                    "--test-labels", str(folder / "test_polygons.gpkg"), "--classes", str(folder / "classes.json"),
                    *TRAIN, "-o", str(model), "--report", str(folder / "sample_model_report")], check=True)


def describe_bands(folder: Path) -> None:
    """Give the cube's bands wavelength descriptions (400-975 nm) and the DSM's band its unit, metres."""
    with rasterio.open(folder / "hsi.tif", "r+") as cube:
        for band in range(1, cube.count + 1):
            cube.set_band_description(band, f"{375 + 25 * band} nm")
    with rasterio.open(folder / "dsm.tif", "r+") as dsm:
        dsm.units = ("m",)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(Path(args[0]) if args else Path("sample_data"), "--scene-only" in sys.argv)
