"""The one model-input seam: windows of aligned rasters in a model's band layout, normalised with
the model's statistics, with per-modality validity. Training, evaluation and mapping read through it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from mamol_core.config import ModalitySpec
from mamol_core.data.rasters import alpha_bands, alpha_opaque
from mamol_core.errors import MamolError
from mamol_core.mapping.align import AlignedInputs


def normalize(data: np.ndarray, valid: np.ndarray, specs: list[ModalitySpec]) -> np.ndarray:
    """Each band normalised in place by its modality's statistics (``(x - mean) / std``, or the
    quantile table where there is one); values of invalid pixels become 0."""
    start = 0
    for index, spec in enumerate(specs):
        block = data[start : start + spec.bands]
        if spec.quantile_values:
            for band, values, scores, std in zip(block, spec.quantile_values, spec.quantile_scores, spec.std):
                band[...] = quantile_scores(band, values, scores, std)
        else:
            block -= np.asarray(spec.mean, np.float32)[:, None, None]
            block /= np.asarray(spec.std, np.float32)[:, None, None]
        block[:, ~valid[index]] = 0.0
        start += spec.bands
    return data


def quantile_scores(band: np.ndarray, values: list[float], scores: list[float], std: float) -> np.ndarray:
    """``band`` through a quantile table: linear between its ``values`` -> ``scores``, and beyond the
    first and last value linear with slope ``1 / std``, so values outside the training range stay ordered."""
    out = np.interp(band, values, scores)
    below, above = band < values[0], band > values[-1]
    out[below] = scores[0] + (band[below] - values[0]) / std
    out[above] = scores[-1] + (band[above] - values[-1]) / std
    return out


def declared_scaling(dataset, path: Path, bands: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """The declared ``(scale, offset)`` (GDAL metadata) of a raster's ``bands`` (0-based), as
    ``[bands, 1, 1]`` float32 arrays; ``None`` where each is stored as it is (scale 1, offset 0). A
    scale of 0 or one that is not finite, or an offset that is not finite, is refused naming ``path``."""
    scales, offsets = (np.array([1.0 if values[b] is None else values[b] for b in bands], np.float64)
                       for values in (dataset.scales, dataset.offsets))
    broken = ~np.isfinite(scales) | (scales == 0) | ~np.isfinite(offsets)
    if broken.any():
        band = int(np.argmax(broken))
        raise MamolError(f"{path}: band {bands[band] + 1} declares scale {scales[band]:g} and offset {offsets[band]:g}, which leave no "
                         f"measurement; declare the right ones, or read its stored values as they are "
                         f"(gdal_edit.py -scale 1 -offset 0 {shlex.quote(str(path))})")
    if np.all(scales == 1.0) and np.all(offsets == 0.0):
        return None
    return scales.astype(np.float32)[:, None, None], offsets.astype(np.float32)[:, None, None]


@dataclass
class BandReading:
    """How one raster's bands become a modality's values: the bands that hold measurements and the
    alpha bands (0-based) with the value at which each is opaque (a pixel is data only where every
    alpha band is opaque, as GDAL's warper reads alpha), and the measurements' declared scale and offset."""

    measurements: list[int]
    alphas: list[int]
    opaque: np.ndarray  # [alphas, 1, 1]
    scaling: tuple[np.ndarray, np.ndarray] | None

    @classmethod
    def of(cls, dataset, path: Path, as_declared: bool) -> "BandReading":
        """As the raster declares its bands (``as_declared``), or every band's stored numbers."""
        if not as_declared:
            return cls(list(range(dataset.count)), [], np.zeros((0, 1, 1)), None)
        reading = cls.stored(dataset, path)
        reading.scaling = declared_scaling(dataset, path, reading.measurements)
        return reading

    @classmethod
    def stored(cls, dataset, path: Path) -> "BandReading":
        """The raster's measurement and alpha bands as it declares them, its values as stored (no scale applied)."""
        alphas = alpha_bands(dataset, path)
        opaque = np.array([alpha_opaque(dataset, b) for b in alphas], np.float32)[:, None, None]
        return cls([b for b in range(dataset.count) if b not in alphas], alphas, opaque, None)

    def data_mask(self, raster: np.ndarray) -> np.ndarray:
        """Where the raster's bands ``raster`` (``[bands, h, w]``, all of them) hold data by its alpha
        bands: every one opaque (everywhere, without alpha)."""
        return (raster[self.alphas] >= self.opaque).all(axis=0)

    def scaling_note(self) -> str | None:
        """How a declared scale and offset are applied, for messages (``None`` where none is)."""
        if self.scaling is None:
            return None
        scales, offsets = (np.unique(a.ravel()) for a in self.scaling)
        return (f"read with its declared scale {scales[0]:g} and offset {offsets[0]:g}" if len(scales) == len(offsets) == 1
                else "read with its bands' declared scales and offsets")

    def notes(self) -> list[str]:
        """What is read otherwise than as stored, for the log."""
        alphas = [f"band {b + 1} is its alpha band: read as the mask (data where it is {int(o)})"
                  for b, o in zip(self.alphas, self.opaque.ravel())]
        return [*filter(None, [self.scaling_note()]), *alphas]


class ModelReader:
    """Reads windows of ``aligned`` in the band layout of ``modalities`` (the model's order):
    ``[total_bands, h, w]`` float32 and validity ``[M, h, w]``. A modality that was not given, or a
    window part outside its raster, reads as zeros with no valid pixel; windows may reach past the
    grid (when it is smaller than one tile), and that part is invalid too. Where a modality's spec
    says so (``as_declared``) its raster is read as it declares its bands (:class:`BandReading`)."""

    def __init__(self, modalities: list[ModalitySpec], aligned: AlignedInputs) -> None:
        self.modalities, self.aligned = modalities, aligned
        given = {item.name: index for index, item in enumerate(aligned.inputs)}
        self.order = [given.get(m.name) for m in modalities]
        ends = np.cumsum([m.bands for m in modalities])
        self.layout = [slice(int(end) - m.bands, int(end)) for end, m in zip(ends, modalities)]
        starts = np.cumsum([0] + [dataset.count for dataset in aligned.datasets])
        self.input_bands = [slice(int(starts[i]), int(starts[i + 1])) for i in range(len(aligned.datasets))]
        self.readings = [BandReading.of(aligned.datasets[index], aligned.inputs[index].path, m.as_declared) if index is not None else None
                         for m, index in zip(modalities, self.order)]

    def declared_scaling(self) -> dict[str, str]:
        """For each given modality read with a declared scale or offset, how (for messages about its values)."""
        said = {spec.name: reading.scaling_note() for spec, reading in zip(self.modalities, self.readings) if reading is not None}
        return {name: note for name, note in said.items() if note}

    def notes(self) -> dict[str, list[str]]:
        """For each given modality, what is read otherwise than as stored (declared scale, alpha bands)."""
        said = {spec.name: reading.notes() for spec, reading in zip(self.modalities, self.readings) if reading is not None}
        return {name: notes for name, notes in said.items() if notes}

    def file_bands(self, name: str) -> list[int]:
        """The 1-based bands of modality ``name``'s raster, in the model's band order."""
        reading = self.readings[[m.name for m in self.modalities].index(name)]
        return [b + 1 for b in reading.measurements] if reading is not None else []

    def read(self, window: Window, normalized: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The window's bands, normalised with the modalities' statistics unless ``normalized`` is
        false (raw values, to fit those statistics: invalid values of a given raster are then NaN, those
        of a modality not given or past the grid 0)."""
        grid = self.aligned.grid
        row0, col0 = int(window.row_off), int(window.col_off)
        rows, cols = min(int(window.height), grid.height - row0), min(int(window.width), grid.width - col0)
        data = np.zeros((int(self.layout[-1].stop), int(window.height), int(window.width)), np.float32)
        valid = np.zeros((len(self.order), int(window.height), int(window.width)), bool)
        block, ok = self.aligned.read(Window(col0, row0, cols, rows))
        for modality, index in enumerate(self.order):
            if index is not None:
                raster, reading = block[self.input_bands[index]], self.readings[modality]
                values = data[self.layout[modality], :rows, :cols]
                values[...] = raster[reading.measurements]
                if reading.scaling is not None:
                    scale, offset = reading.scaling
                    values *= scale
                    values += offset
                valid[modality, :rows, :cols] = ok[index] & reading.data_mask(raster)
        return normalize(data, valid, self.modalities) if normalized else data, valid
