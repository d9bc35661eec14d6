"""Land-cover mapping of georeferenced rasters: block by block, tile by tile, bounded memory.

The output grid is split into square blocks whose side is a multiple of the tile stride (the
first row and column of blocks up to a stride longer, so that the others start on the lattice). For
each block, the tiles of the global tile grid (every ``stride`` pixels on a lattice fixed in the
CRS, so that maps of overlapping extents on one pixel grid share their tiles, plus a first and last
row and column flush with the raster's edges) that touch it are read through the aligned inputs, normalised with
the model's statistics, predicted and blended, and the block is written. Overlapping tiles that
straddle two blocks are predicted twice, so every block is self-contained and memory does not
grow with the raster; with tiles side by side (``--stride`` = the tile side) no tile straddles
two blocks. Reading runs one block ahead, in a background thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from mamol_core import __version__
from mamol_core.config import MamolConfig
from mamol_core.data.reader import ModelReader
from mamol_core.data.sources import check_sources
from mamol_core.data.plausibility import file_warnings, input_warnings
from mamol_core.data.rasters import Grid
from mamol_core.distributed import all_sum, current, stop_together
from mamol_core.errors import MamolError
from mamol_core.mapping.align import AlignedInputs, MapInput
from mamol_core.mapping.crs import crs_name
from mamol_core.mapping.area import GridArea, MapArea
from mamol_core.mapping.dense import MIN_VALID, DensePredictor, default_stride, tile_starts, tiles_touching
from mamol_core.mapping.outputs import MapWriter, OutputPaths, encode_block
from mamol_core.mapping.parts import BlockParts, file_identity
from mamol_core.mapping.prefetch import prefetched
from mamol_core.model import MaMOLClassifier
from mamol_core.progress import counter

log = logging.getLogger(__name__)

#: Bytes of input bands one block may hold when the block size is chosen automatically (with the
#: read-ahead, two to three blocks are in memory at once).
BLOCK_BUDGET = 128 * 2**20
#: GDAL's raster block cache while mapping, in MB (its default, 5% of RAM, lets memory grow with the raster).
GDAL_CACHE_MB = 128


def default_batch(device: torch.device) -> int:
    """Tiles per forward pass: 2048 on a GPU; 128 on a CPU, the fastest of 32-1024 measured on 2 cores
    (smaller batches stay in cache; docs/benchmarks.md)."""
    return 2048 if device.type == "cuda" else 128


@dataclass
class MapOptions:
    """How to map: tile stride (default: half the tile), tiles per batch (default: by device), block side, etc."""

    stride: int | None = None
    batch_size: int | None = None  # default: default_batch(device)
    block_size: int | None = None
    min_valid: float = MIN_VALID
    assume_crs: str | None = None
    reference: Path | None = None
    resampling: str = "bilinear"
    aoi: Path | None = None  # map only inside these polygons
    mask: Path | None = None  # map only where this raster is nonzero


@dataclass
class MapSummary:
    """What a mapping run did."""

    width: int
    height: int
    tiles: int
    seconds: float
    estimated: bool = False  # seconds is an estimate: nothing was mapped
    kept_pixels: int = 0  # pixels of the blocks an earlier, stopped run finished: not mapped (or estimated) by this one
    #: Pixels mapped from each combination of the model's sensors, by availability code (bit i: modality i; 0: none);
    #: ``None`` where unknown (estimated, a rank other than 0 under torchrun, blocks of an earlier release kept).
    combinations: np.ndarray | None = None

    @property
    def megapixels_per_second(self) -> float:
        """The pixels this run mapped (or would map) per second, in millions."""
        return (self.width * self.height - self.kept_pixels) / 1e6 / max(self.seconds, 1e-9)


def block_pixels(blocks: list[Block], chosen: np.ndarray) -> int:
    """How many output pixels the blocks where ``chosen`` (bool, one per block) is true write."""
    return sum(int(b.target.width * b.target.height) for b, c in zip(blocks, chosen) if c)


def block_side(config: MamolConfig, stride: int, requested: int | None) -> int:
    """Side of the square blocks read at once: a multiple of the tile stride (so that, with tiles
    that do not overlap, no tile straddles two blocks and none is predicted twice), at least one
    tile, sized from ``BLOCK_BUDGET`` unless ``requested``."""
    size = config.model.layout.patch_size
    if requested is None:
        budget = int(math.sqrt(BLOCK_BUDGET / 4 / max(config.model.total_bands, 1)))
        requested = int(min(1024, max(size * 4, 64, budget)))
    return stride * math.ceil(max(requested, size) / stride)


@dataclass
class Block:
    """One block of the output grid: the part it writes, the window read for its tiles (which may
    reach past the block, and past the raster when the raster is smaller than a tile), and the
    origins of those tiles inside the read window."""

    target: Window
    read_window: Window
    origins: np.ndarray


def lattice_phase(grid: Grid, stride: int) -> tuple[int, int]:
    """Rows and columns (each ``0 .. stride - 1``) from ``grid``'s top-left pixel to the first tile of
    a lattice every ``stride`` pixels counted from the CRS's origin: maps of overlapping extents on
    one pixel grid then predict the pixels they share from the same tiles. ``(0, 0)`` for a rotated
    grid. Edges on the lattice or half a pixel off it (pixel-is-point grids) are counted alike despite
    rounding noise."""
    t = grid.transform
    if t.b or t.d:
        return 0, 0
    row, column = math.floor(t.f / t.e + 0.25), math.floor(t.c / t.a + 0.25)  # the lattice index of the first pixel
    return -row % stride, -column % stride


def plan_blocks(height: int, width: int, size: int, stride: int, side: int, phase: tuple[int, int] = (0, 0)) -> list[Block]:
    """The blocks covering a ``height x width`` grid and the tiles of the global tile grid (every
    ``stride`` pixels from ``phase``'s row and column, plus a first and last row and column flush with
    the edges) that each one predicts. Blocks after the first start on the tile lattice."""
    row_tiles = tile_starts(max(height, size), size, stride, phase[0])
    col_tiles = tile_starts(max(width, size), size, stride, phase[1])

    def touching(starts: np.ndarray, lo: int, hi: int) -> np.ndarray:
        return starts[(starts < hi) & (starts + size > lo)]

    blocks = []
    for r0 in [0, *range(phase[0] + side, height, side)]:
        for c0 in [0, *range(phase[1] + side, width, side)]:
            r1 = min(r0 + side if r0 else phase[0] + side, height)
            c1 = min(c0 + side if c0 else phase[1] + side, width)
            rows, cols = touching(row_tiles, r0, r1), touching(col_tiles, c0, c1)
            read_r0, read_c0 = int(rows[0]), int(cols[0])
            read_window = Window(read_c0, read_r0, int(cols[-1]) + size - read_c0, int(rows[-1]) + size - read_r0)
            origins = np.stack(np.meshgrid(rows - read_r0, cols - read_c0, indexing="ij"), -1).reshape(-1, 2)
            blocks.append(Block(Window(c0, r0, c1 - c0, r1 - r0), read_window, origins))
    return blocks


def check_usage(used_by: np.ndarray, config: MamolConfig, inputs: list[MapInput], limited_by: str = "") -> None:
    """After mapping: stop when no pixel had a usable sensor (an empty map is not a result); warn
    for each given input that no pixel could use (all nodata, or under ``--min-valid`` everywhere).
    ``limited_by`` names the options (``--aoi``) that confined the map, for the message."""
    paths = {item.name: item.path for item in inputs}
    given = [(i, m.name) for i, m in enumerate(config.model.modalities) if m.name in paths]
    if not used_by.any():
        where = f" inside {limited_by}" if limited_by else ""
        raise MamolError(f"{', '.join(str(paths[name]) for _, name in given)}: no pixel{where} holds valid data (all nodata, or "
                         f"valid on less than --min-valid of every tile); check the rasters' nodata value and extent"
                         f"{f', and that {limited_by} lies where they hold data' if limited_by else ''}")
    for index, name in given:
        if not used_by[index]:
            log.warning("%s: no tile of the map holds enough valid pixels of this %s raster (it is all nodata, or valid on less "
                        "than --min-valid of every tile, as a raster a few pixels across is); the map was made without it", paths[name], name)


def job_description(model_path: Path | None, inputs: list[MapInput], grid, options: MapOptions, stride: int, side: int,
                    block_count: int, outputs: OutputPaths, amp_dtype: torch.dtype | None) -> dict:
    """Everything that decides a map's blocks, so that a restart reuses only its own."""
    return {"mamol": __version__, "model": file_identity(model_path) if model_path is not None else None,
            "inputs": {item.name: file_identity(item.path) for item in inputs},
            "grid": {"crs": grid.crs.to_wkt() if grid.crs is not None else None, "transform": list(grid.transform)[:6],
                     "width": grid.width, "height": grid.height},
            "tiles": {"stride": stride, "phase": list(lattice_phase(grid, stride)), "block": side, "blocks": block_count,
                      "min_valid": options.min_valid,
                      "resampling": options.resampling, "assume_crs": options.assume_crs},
            "outputs": [name for name in ("probabilities", "confidence", "availability") if getattr(outputs, name) is not None],
            "area": {name: file_identity(path) for name, path in (("aoi", options.aoi), ("mask", options.mask)) if path is not None},
            "precision": str(amp_dtype)}


def predicted_blocks(indices: list[int], blocks: list[Block], reader: ModelReader, predictor: DensePredictor, grid,
                     encode: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]], device: torch.device,
                     bar, area: GridArea | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(index, encoded outputs)`` of the blocks ``indices``; each block is read (warped,
    normalised) in a background thread while the model predicts the one before. With ``area`` only
    the tiles touching it are predicted and pixels outside it are left unmapped."""
    chosen = [(index, blocks[index]) for index in indices]

    def load(item: tuple[int, Block]):
        window = item[1].read_window
        return (*reader.read(window), area.pixels(window) if area is not None else None)

    with contextlib.closing(prefetched(chosen, load)) as ahead:
        for (index, block), (data, valid, inside_area) in ahead:
            read_r0, read_c0 = int(block.read_window.row_off), int(block.read_window.col_off)
            inside = torch.zeros(valid.shape[1:], dtype=torch.bool, device=device)
            inside[: grid.height - read_r0, : grid.width - read_c0] = True
            origins = block.origins
            if inside_area is not None:
                touching = tiles_touching(torch.from_numpy(inside_area), torch.from_numpy(origins), predictor.size).numpy()
                bar.update(int((~touching).sum()))
                origins = origins[touching]
            result = predictor.predict(torch.from_numpy(data).to(device), torch.from_numpy(valid).to(device),
                                       torch.as_tensor(origins), on_tiles=bar.update, inside=inside)
            t = block.target
            crop = (slice(None), slice(int(t.row_off) - read_r0, int(t.row_off + t.height) - read_r0),
                    slice(int(t.col_off) - read_c0, int(t.col_off + t.width) - read_c0))
            used = result.used[crop].cpu().numpy()
            if inside_area is not None:
                used &= inside_area[crop[1:]][None]
            yield index, encode(result.probabilities[crop].float().cpu().numpy(), used)


def estimate_seconds(blocks: list[Block], reader: ModelReader, predictor: DensePredictor, device: torch.device,
                     area: GridArea | None = None) -> float:
    """About how long mapping ``blocks`` takes: the block nearest their centre, else one of the first
    blocks, that holds data is read and a few batches of its tiles with data are predicted (after one
    warm-up tile), both timed, then scaled to every block's pixels and to the tiles there are to predict
    (those touching ``area``). The centre is where the inputs most likely overlap: a corner with fewer
    sensors predicts faster (an absent sensor costs no backbone pass) and would make the estimate short."""
    size = predictor.size
    rows = [b.target.row_off + b.target.height / 2 for b in blocks]
    cols = [b.target.col_off + b.target.width / 2 for b in blocks]
    centre = (min(rows) + max(rows)) / 2, (min(cols) + max(cols)) / 2
    middle = min(range(len(blocks)), key=lambda i: abs(rows[i] - centre[0]) + abs(cols[i] - centre[1]))
    for block in [blocks[middle], *(b for i, b in enumerate(blocks[:8]) if i != middle)]:
        start = time.perf_counter()
        data, valid = reader.read(block.read_window)
        read_seconds = time.perf_counter() - start
        with_data = tiles_touching(torch.from_numpy(valid.any(0)), torch.from_numpy(block.origins), size).numpy()
        if with_data.any():
            break
    tile_seconds = 0.0
    if with_data.any():
        data, valid = torch.from_numpy(data).to(device), torch.from_numpy(valid).to(device)
        origins = torch.as_tensor(block.origins[with_data])
        predictor.predict(data, valid, origins[:1])
        sample = origins[: 4 * predictor.batch_size]
        start = time.perf_counter()
        predictor.predict(data, valid, sample)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tile_seconds = (time.perf_counter() - start) / len(sample)
    tiles = sum(int(tiles_touching(torch.from_numpy(area.pixels(b.read_window)), torch.from_numpy(b.origins), size).sum())
                if area is not None else len(b.origins) for b in blocks)
    read_pixels = sum(int(b.read_window.width * b.read_window.height) for b in blocks)
    return read_seconds * read_pixels / int(block.read_window.width * block.read_window.height) + tile_seconds * tiles


def write_outputs(encoded: Iterable[tuple[int, dict[str, np.ndarray]]], blocks: list[Block], outputs: OutputPaths, grid,
                  config: MamolConfig, inputs: list[MapInput], limited_by: str = "") -> np.ndarray | None:
    """Write every block's encoded outputs into ``outputs`` (they appear only when all are complete);
    ``limited_by`` names the options that confined the map (see :func:`check_usage`). Returns the pixels of
    each sensor combination (:attr:`MapSummary.combinations`)."""
    with MapWriter(outputs, grid, config.model.classes, config.model.modality_names, [item.name for item in inputs]) as writer:
        used_by = np.zeros(len(config.model.modalities), np.int64)
        combinations: np.ndarray | None = np.zeros(2 ** len(config.model.modalities), np.int64)
        for index, block in encoded:
            writer.write(blocks[index].target, block)
            used_by += block["used_count"]
            combinations = combinations + block["combination_count"] if "combination_count" in block and \
                combinations is not None else None  # a block kept from an earlier release counts none
        check_usage(used_by, config, inputs, limited_by)
        writer.commit()
    return combinations


def wait_for_blocks(parts: BlockParts, count: int, poll: float = 0.5) -> None:
    """Rank 0, its own blocks done: wait until every rank's blocks are on disk (a rank that fails
    makes torchrun stop this one)."""
    done = int(parts.finished(count).sum())
    if done < count:
        log.info("waiting for the other ranks' blocks (%d of %d done)", done, count)
    while done < count:
        time.sleep(poll)
        done = int(parts.finished(count).sum())


def map_share(parts: BlockParts, blocks: list[Block], predict: Callable[[list[int]], Iterator[tuple[int, dict]]],
              write: Callable[[Iterable[tuple[int, dict]]], None], device: torch.device) -> np.ndarray:
    """Map this process's share of the blocks not finished yet into ``parts`` (under torchrun a share per
    rank, else all of them); rank 0 then waits for the others' blocks and writes the outputs from them, and
    the other ranks wait until it has. Interrupted, the finished blocks stay for the same command to continue
    from. A single process that stops on an error removes them, as it leaves no output, unless an earlier
    run had left blocks there (files it does not own) and the error came before the outputs were assembled
    (a full disk, say): then they stay for the same command to continue once it is fixed. Returns which
    blocks an earlier run had finished (bool, one per block)."""
    ranks = current()
    kept = all_sum(torch.as_tensor(parts.finished(len(blocks)) if ranks.main else np.zeros(len(blocks), bool),
                                   dtype=torch.float32, device=device)).cpu().numpy() > 0
    todo = np.flatnonzero(~kept)
    mine = [int(i) for i in todo[ranks.rank :: ranks.world]]
    share = block_pixels(blocks, kept) / max(block_pixels(blocks, np.ones(len(blocks), bool)), 1)
    earlier = f"{int(kept.sum())} of {len(blocks)} blocks finished by an earlier run are kept, {share:.0%} of the map" if kept.any() else ""
    if ranks.distributed:
        log.info("torchrun: %d ranks share %d blocks%s", ranks.world, len(todo), f" ({earlier})" if earlier else "")
    elif earlier:
        log.info("continuing: %s (%s)", earlier, parts.folder)
    assembling = False
    try:
        for index, block in predict(mine):
            parts.save(index, block)
        if ranks.main:
            wait_for_blocks(parts, len(blocks))
            assembling = True
            write((index, parts.load(index)) for index in range(len(blocks)))
            parts.mark_assembled()
            parts.remove()
        else:
            while not parts.assembled():
                time.sleep(0.5)
        return kept
    except KeyboardInterrupt:
        if ranks.main and parts.folder.exists():
            finished = int(parts.finished(len(blocks)).sum())
            if finished or ranks.distributed:
                log.warning("%d finished blocks are kept in %s; the same command continues from them", finished, parts.folder)
            else:
                parts.remove()
        raise
    except BaseException:
        if ranks.distributed:  # a torchrun restart continues from them
            raise
        if kept.any() and not assembling and parts.folder.exists():
            log.warning("the %d finished blocks stay in %s (%d of them from an earlier run); once the error below is fixed, "
                        "the same command continues from them", int(parts.finished(len(blocks)).sum()), parts.folder, int(kept.sum()))
        else:  # alone, an error leaves nothing behind
            parts.remove()
        raise


def map_rasters(model: MaMOLClassifier, config: MamolConfig, inputs: list[MapInput], outputs: OutputPaths,
                options: MapOptions, device: torch.device, amp_dtype: torch.dtype | None, progress_mode: str = "bar",
                model_path: Path | None = None, estimate: bool = False) -> MapSummary:
    """Map ``inputs`` with ``model`` into ``outputs``; nothing appears under the output names unless it completes.

    A map of several blocks from a model file (``model_path``, which identifies the job) goes through a
    folder of finished blocks (:mod:`mamol_core.mapping.parts`), so that the same command run again after
    an interruption skips the blocks already done; under torchrun (an initialised process group) the
    blocks are shared among the ranks that way, and rank 0 writes the outputs. With ``estimate``
    nothing is mapped or written: the summary holds the estimated seconds (:func:`estimate_seconds`)."""
    size = config.model.layout.patch_size
    stride = options.stride or default_stride(config.model.layout)
    side = block_side(config, stride, options.block_size)
    predictor = DensePredictor(model, stride, options.batch_size or default_batch(device), amp_dtype, options.min_valid)
    values = np.array([c.value for c in config.model.classes], np.uint8)
    with contextlib.ExitStack() as stack:
        with stop_together(device):  # under torchrun every rank stops when one cannot start
            check_sources(config.model, {item.name: item.path for item in inputs}, complete=False)
            stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
            aligned = stack.enter_context(AlignedInputs(inputs, options.assume_crs, options.reference, options.resampling,
                                                        config.model.grid))
            aligned.check_readable()
            area = None
            if options.aoi is not None or options.mask is not None:
                chosen = MapArea(options.aoi, options.mask)
                aligned = stack.enter_context(AlignedInputs(inputs, options.assume_crs, resampling=options.resampling,
                                                            grid=chosen.crop(aligned.grid, size)))
                area = chosen.on(aligned.grid)
                stack.callback(area.close)
                log.info("mapping only %s", chosen.describe())
            grid = aligned.grid
            reader = ModelReader(config.model.modalities, aligned)
            if current().main:
                paths = {item.name: item.path for item in inputs}
                for name, notes in reader.notes().items():
                    log.info("%s: %s", paths[name], "; ".join(notes))
                for line in [*(line for item in inputs for line in file_warnings(item.path)), *input_warnings(reader, paths)]:
                    log.warning(line)
            blocks = plan_blocks(grid.height, grid.width, size, stride, side, lattice_phase(grid, stride))
        total = sum(len(b.origins) for b in blocks)
        log.info("mapping %dx%d px (%s) in %d block%s, %d tile%s of %d px (tokens of %d px), stride %d, device %s", grid.width,
                 grid.height, crs_name(grid.crs), len(blocks), "" if len(blocks) == 1 else "s", total, "" if total == 1 else "s", size,
                 config.model.layout.token_size, stride, device)
        parts = None
        if current().distributed or (model_path is not None and len(blocks) > 1):
            parts = BlockParts(outputs.classes, job_description(model_path, inputs, grid, options, stride, side, len(blocks),
                                                                outputs, amp_dtype))
        if estimate:  # only the blocks that an earlier, stopped run of the same command has not finished
            kept = parts.kept(len(blocks)) if parts is not None else np.zeros(len(blocks), bool)
            if kept.any():
                log.info("%d of %d blocks were finished by an earlier run (%s); the estimate covers the others",
                         int(kept.sum()), len(blocks), parts.folder)
            todo = [block for block, done in zip(blocks, kept) if not done]
            seconds = estimate_seconds(todo, reader, predictor, device, area) if todo else 0.0
            return MapSummary(grid.width, grid.height, total, seconds, estimated=True, kept_pixels=block_pixels(blocks, kept))
        if parts is not None:
            with stop_together(device):  # rank 0 makes the folder before any rank writes to it
                if current().main:
                    stack.enter_context(parts.exclusive())
                    parts.prepare()
        start = time.perf_counter()

        def predict(indices: list[int]) -> Iterator[tuple[int, dict]]:
            bar = stack.enter_context(contextlib.closing(counter(sum(len(blocks[i].origins) for i in indices), "mapping", "tile",
                                                                 progress_mode)))
            return predicted_blocks(indices, blocks, reader, predictor, grid,
                                    lambda p, u: encode_block(p, u, values, outputs), device, bar, area)

        written: list[np.ndarray | None] = [None]

        def write(encoded: Iterable[tuple[int, dict]]) -> None:
            limited_by = " and ".join(flag for flag, given in (("--aoi", options.aoi), ("--mask", options.mask)) if given)
            written[0] = write_outputs(encoded, blocks, outputs, grid, config, inputs, limited_by)

        kept = np.zeros(len(blocks), bool)
        if parts is None:
            write(predict(list(range(len(blocks)))))
        else:
            kept = map_share(parts, blocks, predict, write, device)
        return MapSummary(grid.width, grid.height, total, time.perf_counter() - start, kept_pixels=block_pixels(blocks, kept),
                          combinations=written[0])
