"""Cost per pixel, measured in one run on one synthetic raster: MaMOL's end-to-end mapping and
training throughput for each backbone, and a random forest's prediction throughput beside it.

The raster is the synthetic two-sensor scene (a hyperspectral-like cube and a DSM, with training
labels). MaMOL models are untrained (speed does not depend on the weights) but use the layout and
method a trained model would; mapping runs :func:`map_rasters` from the model file to the written
outputs, as ``mamol-map`` does. The forest is the classic analyst's tool: scikit-learn, 300 trees,
fitted on 11 x 11 patches of every band around the training pixels, predicting every pixel of the
raster from the same patch features, in chunks.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import torch

from mamol_core.backbones import OFFLINE_BACKBONE
from mamol_core.config import BackboneSpec, ExpertSpec, LayoutSpec, MamolConfig, ModelConfig, ProtocolSpec, TrainSpec
from mamol_core.mapping.align import MapInput
from mamol_core.mapping.dense import default_stride
from mamol_core.mapping.mapper import MapOptions, default_batch, map_rasters
from mamol_core.mapping.outputs import OutputPaths

log = logging.getLogger(__name__)

#: The backbones ``mamol-bench speed`` compares: the offline default and the paper's architecture.
SPEED_BACKBONES = (OFFLINE_BACKBONE, "vit-b-16-random")


def warmup_side(layout: LayoutSpec, batch: int) -> int:
    """Side in pixels of the small scene mapped, untimed, before the timed raster (start-up costs):
    just large enough that its tiles, at the default half-tile stride, fill one batch of ``batch``,
    so that the kernels for the full batch shape are set up too."""
    per_side = math.ceil(math.sqrt(batch))
    return layout.patch_size + default_stride(layout) * (per_side - 1)


@dataclass
class SpeedSettings:
    """What to measure: the raster side and bands, the backbones, training steps, the forest."""

    side: int = 256
    bands: int = 8
    backbones: tuple[str, ...] = SPEED_BACKBONES
    layout: LayoutSpec = field(default_factory=LayoutSpec)
    train_steps: int = 6
    train_batch: int = 128
    map_batch: int | None = None
    trees: int = 300
    forest_patch: int = 11
    processes: tuple[int, ...] = ()  # torchrun process counts to compare (empty: no scaling figure)
    precision: str = "auto"  # the --precision the torchrun processes get


@dataclass
class SpeedResult:
    """One run's figures; ratios are MaMOL mapping over forest prediction (above 1: MaMOL faster)."""

    hardware: str
    device: str
    torch: str
    precision: str
    threads: int
    side: int
    megapixels: float
    layout: dict
    trees: int
    forest_patch: int
    mapping_mpx_s: dict[str, float] = field(default_factory=dict)
    training_steps_s: dict[str, float] = field(default_factory=dict)
    training_samples_s: dict[str, float] = field(default_factory=dict)
    forest_mpx_s: float = 0.0
    scaling: dict[str, dict[str, float]] = field(default_factory=dict)  # processes -> mapping_mpx_s, training_samples_s

    @property
    def ratios(self) -> dict[str, float]:
        """MaMOL's mapping Mpx/s over the forest's, per backbone."""
        return {name: rate / self.forest_mpx_s for name, rate in self.mapping_mpx_s.items()} if self.forest_mpx_s else {}

    def as_dict(self) -> dict:
        """Every figure, the ratios included, for ``--json``."""
        return {**asdict(self), "ratio_to_forest": self.ratios}


def speed_model_config(folder: Path, backbone: str, layout: LayoutSpec) -> MamolConfig:
    """An untrained model config for the synthetic scene in ``folder``, normalisation fitted on it."""
    from mamol_core.data.pixels import prepare_scene
    from mamol_core.data.scene import open_scene

    scene = open_scene(folder)
    _, specs = prepare_scene(scene, ProtocolSpec(0.0, "both", 0), margin=layout.patch_size)
    return MamolConfig(ModelConfig(specs, scene.classes, BackboneSpec(backbone), ExpertSpec(), layout), ProtocolSpec(), TrainSpec())


def measure_mapping(folder: Path, work: Path, config: MamolConfig, device: torch.device, amp: torch.dtype | None,
                    batch: int | None, warmup: Path) -> float:
    """Mpx/s of mapping the scene in ``folder``, from the model file saved in ``work`` to the outputs written
    there, ``batch`` tiles per forward pass (None: the device's default). The small scene in ``warmup``
    (same bands) is mapped first, untimed, so that one-off start-up (thread pools, kernel selection) is
    not counted without mapping the whole raster twice."""
    from mamol_core.model import build_model
    from mamol_core.modelfile.weights import load_model, save_model

    name = config.model.backbone.name
    model_path = work / f"speed_{name}.safetensors"
    save_model(build_model(config.model), config, model_path)
    summary = None
    for scene, outputs in ((warmup, OutputPaths(work / f"warmup_{name}.tif")), (folder, OutputPaths(work / f"map_{name}.tif"))):
        inputs = [MapInput(m.name, scene / f"{m.name}.tif") for m in config.model.modalities]
        start = time.perf_counter()
        model, loaded = load_model(model_path, device)
        summary = map_rasters(model, loaded, inputs, outputs, MapOptions(batch_size=batch), device, amp, "none")
        seconds = time.perf_counter() - start
    return summary.width * summary.height / 1e6 / seconds


def measure_training(folder: Path, config: MamolConfig, settings: SpeedSettings, device: torch.device,
                     amp: torch.dtype | None) -> float:
    """Training steps per second at the default protocol (one warm-up step, then ``train_steps`` timed)."""
    from mamol_core.data.patches import PatchSampler
    from mamol_core.data.pixels import PixelSet, prepare_scene
    from mamol_core.data.scene import open_scene
    from mamol_core.model import build_model
    from mamol_core.training.fit import training_label_map
    from mamol_core.training.loop import train_model

    prepared, _ = prepare_scene(open_scene(folder), ProtocolSpec(), margin=config.model.layout.patch_size,
                                specs=config.model.modalities)
    model = build_model(config.model).to(device)
    sampler = PatchSampler(torch.from_numpy(prepared.data).to(device), config.model.layout.patch_size,
                           training_label_map(prepared, device))

    def seconds_for(count: int) -> float:
        index = np.resize(np.arange(len(prepared.train)), count * settings.train_batch)
        train = prepared.train
        pixels = PixelSet(train.rows[index], train.cols[index], train.targets[index], train.presence[index])
        start = time.perf_counter()
        train_model(model, sampler, pixels, TrainSpec(epochs=1, min_steps=0, batch_size=settings.train_batch), amp, "none")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    seconds_for(1)
    return settings.train_steps / seconds_for(settings.train_steps)


def patch_features(stack: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch: int) -> np.ndarray:
    """``[n, bands * patch * patch]`` features: the reflect-padded patch of every band around each pixel."""
    half = patch // 2
    padded = np.pad(stack, ((0, 0), (half, half), (half, half)), mode="reflect")
    offsets = np.arange(patch)
    r = rows[:, None, None] + offsets[None, :, None]
    c = cols[:, None, None] + offsets[None, None, :]
    return padded[:, r, c].transpose(1, 0, 2, 3).reshape(len(rows), -1)


def measure_forest(folder: Path, settings: SpeedSettings, chunk: int = 16384) -> float:
    """Mpx/s of a fitted forest predicting every pixel of the raster (features built per chunk)."""
    from sklearn.ensemble import RandomForestClassifier

    with rasterio.open(folder / "hsi.tif") as hsi, rasterio.open(folder / "dsm.tif") as dsm, \
            rasterio.open(folder / "train_labels.tif") as labels:
        stack = np.concatenate([hsi.read().astype(np.float32), dsm.read().astype(np.float32)])
        train = labels.read(1)
    stack = (stack - stack.mean(axis=(1, 2), keepdims=True)) / np.maximum(stack.std(axis=(1, 2), keepdims=True), 1e-6)
    rows, cols = np.nonzero(train)
    forest = RandomForestClassifier(settings.trees, n_jobs=-1, random_state=0)
    forest.fit(patch_features(stack, rows, cols, settings.forest_patch), train[rows, cols])
    height, width = stack.shape[1:]
    all_rows, all_cols = np.divmod(np.arange(height * width), width)
    start = time.perf_counter()
    for begin in range(0, height * width, chunk):
        part = slice(begin, begin + chunk)
        forest.predict(patch_features(stack, all_rows[part], all_cols[part], settings.forest_patch))
    return height * width / 1e6 / (time.perf_counter() - start)


def torchrun_seconds(arguments: list[str], processes: int, threads: int, pattern: str) -> float:
    """Run a mamol command under ``torchrun --standalone --nproc_per_node processes``, the machine's
    ``threads`` shared equally, and return the seconds its log reports (the first number matching ``pattern``)."""
    import os
    import re
    import subprocess
    import sys

    from mamol_core.errors import MamolError

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes))}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    found = re.search(pattern, done.stderr)
    if done.returncode != 0 or found is None:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise MamolError(f"torchrun with {processes} processes failed ({tail[0]}); run the same command by hand to see why")
    return float(found.group(1))


def measure_processes(folder: Path, work: Path, config: MamolConfig, settings: SpeedSettings, processes: int,
                      device: torch.device) -> dict[str, float]:
    """Mapping Mpx/s and training samples/s of ``mamol-map`` and ``mamol-train`` run under torchrun with
    ``processes`` processes (on a CPU they share its threads; on GPUs each takes one), as the logs report
    them: mapping from the first block read to the outputs written (16 blocks), training its steps."""
    backbone = config.model.backbone.name
    model_path = work / f"speed_{backbone}.safetensors"
    inputs = [f"--input={m.name}={folder / f'{m.name}.tif'}" for m in config.model.modalities]
    common = ["--device", device.type, "--precision", settings.precision, "--progress", "none"]
    threads = torch.get_num_threads()
    mapping = torchrun_seconds(["-m", "mamol_cli.map", "--model", str(model_path), *inputs, "-o", str(work / f"scaling_{processes}.tif"),
                                "--block-size", str(max(settings.side // 4, settings.layout.patch_size)), *common],
                               processes, threads, r"wrote .* in ([0-9.]+) s")
    steps = 2 * settings.train_steps
    layout = settings.layout
    training = torchrun_seconds(["-m", "mamol_cli.train", "--scene", str(folder), "--backbone", backbone, "--patch-size",
                                 str(layout.patch_size), "--token-size", str(layout.token_size), "--tokenizer-hidden", str(layout.hidden),
                                 "--encoding", layout.encoding,
                                 "--epochs", "0", "--min-steps", str(steps), "--batch-size", str(settings.train_batch), "--no-eval",
                                 "-o", str(work / f"scaling_{processes}.safetensors"), *common],
                                processes, threads, r"training took ([0-9.]+) s")
    return {"mapping_mpx_s": settings.side**2 / 1e6 / mapping, "training_samples_s": steps * settings.train_batch / training}


def run_speed(settings: SpeedSettings, device: torch.device, amp: torch.dtype | None) -> SpeedResult:
    """Every figure of ``mamol-bench speed`` on one synthetic raster written to a temporary folder."""
    from mamol_core.bench.grid import hardware_name
    from mamol_core.data.synthetic import write_scene

    settings.layout.check()
    result = SpeedResult(hardware_name(device), str(device), torch.__version__, str(amp or "float32"), torch.get_num_threads(),
                         settings.side, settings.side**2 / 1e6, asdict(settings.layout), settings.trees, settings.forest_patch)
    with tempfile.TemporaryDirectory(prefix="mamol-speed-") as tmp:
        folder, warmup, work = Path(tmp) / "scene", Path(tmp) / "warmup", Path(tmp) / "outputs"
        work.mkdir()
        fields = max(12, math.ceil(40 * settings.side**2 / 384**2))
        write_scene(folder, settings.side, settings.side, bands=settings.bands, fields=fields, per_field=20, seed=1)
        side = warmup_side(settings.layout, settings.map_batch or default_batch(device))
        write_scene(warmup, side, side, bands=settings.bands, fields=4, per_field=5, seed=2)
        for backbone in settings.backbones:
            config = speed_model_config(folder, backbone, settings.layout)
            log.info("%s: mapping %dx%d px", backbone, settings.side, settings.side)
            result.mapping_mpx_s[backbone] = measure_mapping(folder, work, config, device, amp, settings.map_batch, warmup)
            log.info("%s: %d training step%s of %d samples", backbone, settings.train_steps, "" if settings.train_steps == 1 else "s",
                     settings.train_batch)
            steps = measure_training(folder, config, settings, device, amp)
            result.training_steps_s[backbone] = steps
            result.training_samples_s[backbone] = steps * settings.train_batch
        log.info("random forest (%d trees, %d x %d patches): fit, then predict %dx%d px", settings.trees, settings.forest_patch,
                 settings.forest_patch, settings.side, settings.side)
        result.forest_mpx_s = measure_forest(folder, settings)
        for count in settings.processes:
            log.info("%s under torchrun with %d processes: mapping, then %d training steps", settings.backbones[0], count,
                     2 * settings.train_steps)
            config = speed_model_config(folder, settings.backbones[0], settings.layout)
            result.scaling[str(count)] = measure_processes(folder, work, config, settings, count, device)
    return result


def speed_table(result: SpeedResult) -> str:
    """The figures as a markdown table with the hardware line."""
    layout = result.layout
    lines = [f"Hardware: {result.hardware}; device {result.device}; torch {result.torch}; {result.threads} threads; "
             f"precision {result.precision}.",
             f"Raster: synthetic {result.side} x {result.side} px ({result.megapixels:.3f} Mpx), a cube and a DSM; MaMOL tiles of "
             f"{layout['patch_size']} px, tokens of {layout['token_size']} px, tokenizer width {layout['hidden']}, untrained weights.",
             "",
             "| model | mapping Mpx/s (end to end) | mapping / forest | training steps/s | training samples/s |",
             "|---|---:|---:|---:|---:|"]
    for name, rate in result.mapping_mpx_s.items():
        lines.append(f"| MaMOL, {name} | {rate:.4g} | {result.ratios[name]:.3g}x | {result.training_steps_s[name]:.3g} | "
                     f"{result.training_samples_s[name]:.4g} |")
    lines.append(f"| random forest, {result.trees} trees, {result.forest_patch} x {result.forest_patch} patches | "
                 f"{result.forest_mpx_s:.4g} | 1x | | |")
    if result.scaling:
        first = next(iter(result.scaling.values()))
        lines += ["", f"Scaling under torchrun ({next(iter(result.mapping_mpx_s))}; on a CPU the processes share its "
                      f"{result.threads} threads; mamol-map with 16 blocks, mamol-train's steps as logged):", "",
                  "| processes | mapping Mpx/s | mapping vs first | training samples/s | training vs first |", "|---:|---:|---:|---:|---:|"]
        for count, figures in result.scaling.items():
            lines.append(f"| {count} | {figures['mapping_mpx_s']:.4g} | {figures['mapping_mpx_s'] / first['mapping_mpx_s']:.3g}x | "
                         f"{figures['training_samples_s']:.4g} | {figures['training_samples_s'] / first['training_samples_s']:.3g}x |")
    return "\n".join(lines) + "\n"
