"""Labelled pixels ready for training and testing: the scene window around them, per-band
normalisation fitted on training pixels only, and each pixel's presence mask."""

from __future__ import annotations

import hashlib
import logging
import shlex
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from rasterio.windows import Window

from mamol_core.config import NORMALIZATIONS, ClassSpec, ModalitySpec, ProtocolSpec
from mamol_core.data.protocol import assign_presence
from mamol_core.data.scene import Scene
from mamol_core.errors import MamolError
from mamol_core.data.reader import ModelReader, normalize
from mamol_core.data.plausibility import band_names, fill_under_training, model_input_warnings, partial_bands, values_unit
from mamol_core.data.rasters import open_raster
from mamol_core.mapping.align import AlignedInputs, MapInput
from mamol_core.mapping.crs import ground_pixel

log = logging.getLogger(__name__)

#: Seed offsets of the test and validation splits' protocol assignments (train uses the protocol seed itself).
TEST_SEED_OFFSET = 1
VALIDATION_SEED_OFFSET = 2


@dataclass
class PixelSet:
    """Pixels (window coordinates), their class indices (0-based) and presence masks ``[n, M]``."""

    rows: np.ndarray
    cols: np.ndarray
    targets: np.ndarray
    presence: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def sample(self, count: int, seed: int) -> "PixelSet":
        """A seeded random subset of ``count`` pixels (all of them when there are no more), in the original order."""
        if count >= len(self):
            return self
        chosen = np.sort(np.random.default_rng(seed).choice(len(self), count, replace=False))
        return PixelSet(self.rows[chosen], self.cols[chosen], self.targets[chosen], self.presence[chosen])


@dataclass
class PreparedScene:
    """Normalised bands of the labelled part of a scene (invalid values set to 0) and its pixel sets:
    training, test (``None`` without test labels) and validation (``None`` unless held out)."""

    data: np.ndarray
    valid: np.ndarray
    window: Window
    train: PixelSet
    test: PixelSet | None
    validation: PixelSet | None = None

    def training_labels_digest(self) -> str:
        """A fingerprint of the training and validation pixels, their window, classes and presence masks:
        a training state records it, so a run on other labels is never continued from it."""
        digest = hashlib.sha256(repr((self.window.col_off, self.window.row_off, self.window.width, self.window.height)).encode())
        for pixels in (self.train, self.validation):
            if pixels is not None:
                for array in (pixels.rows, pixels.cols, pixels.targets, pixels.presence):
                    digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]


def label_window(scene: Scene, margin: int, held_out: np.ndarray | None = None) -> Window:
    """Bounding box of all labelled pixels (``held_out`` labels included), grown by ``margin`` and clipped to the grid."""
    labelled = scene.train_labels > 0
    for other in (scene.test_labels, held_out):
        if other is not None:
            labelled = labelled | (other > 0)
    rows, cols = np.nonzero(labelled)
    r0, r1 = max(rows.min() - margin, 0), min(rows.max() + margin + 1, scene.grid.height)
    c0, c1 = max(cols.min() - margin, 0), min(cols.max() + margin + 1, scene.grid.width)
    return Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))


#: Quantiles per band fitted for quantile normalisation, at probabilities (k + 0.5) / QUANTILES.
QUANTILES = 100


def fit_normalization(data: np.ndarray, valid: np.ndarray, scene: Scene, rows: np.ndarray, cols: np.ndarray,
                      method: str = "standard", file_bands: dict[str, list[int]] | None = None) -> list[ModalitySpec]:
    """Per-band mean and standard deviation over the valid training pixels of each modality and, with
    ``method`` ``quantile``, each band's quantile table (:func:`quantile_table`). ``data`` holds NaN where
    a band has no data; ``file_bands`` (modality -> its raster's bands) names bands in errors."""
    if method not in NORMALIZATIONS:
        raise MamolError(f"normalisation {method!r} is not one of {', '.join(NORMALIZATIONS)}")
    specs, start = [], 0
    for index, raster in enumerate(scene.modalities):
        bands = data[start : start + raster.bands]
        usable = valid[index, rows, cols]
        if not usable.any():
            numbers = (file_bands or {}).get(raster.name) or list(range(1, raster.bands + 1))
            empty = [numbers[b] for b in range(raster.bands) if not np.isfinite(bands[b, rows, cols]).any()]
            if empty and len(empty) < raster.bands:  # the others hold data there: a pixel needs every band
                raise MamolError(f"{raster.path}: band{'s' if len(empty) > 1 else ''} {', '.join(map(str, empty))} of its "
                                 f"{raster.bands} hold{'' if len(empty) > 1 else 's'} no data under any training pixel, and a pixel "
                                 f"counts only where every band does; check the nodata value, or drop "
                                 f"{'them' if len(empty) > 1 else 'it'} (gdal_translate "
                                 f"{' '.join(f'-b {n}' for n in range(1, band_count(raster.path) + 1) if n not in empty)} "
                                 f"{shlex.quote(str(raster.path))} {shlex.quote(raster.path.stem + '_bands.tif')})")
            raise MamolError(f"{raster.path}: no valid value under any training pixel; check its nodata value and extent")
        values = bands[:, rows[usable], cols[usable]].astype(np.float64)
        warning = fill_under_training(values, (file_bands or {}).get(raster.name) or list(range(1, raster.bands + 1)), raster.path, method)
        if warning:
            log.warning(warning)
        std = values.std(axis=1)
        spec = ModalitySpec(raster.name, raster.bands, values.mean(axis=1).tolist(), np.where(std > 0, std, 1.0).tolist())
        if method == "quantile":
            tables = [quantile_table(band) for band in values]
            spec.quantile_values, spec.quantile_scores = [t[0] for t in tables], [t[1] for t in tables]
        specs.append(spec)
        start += raster.bands
    return specs


def band_count(path) -> int:
    """How many bands the raster at ``path`` stores (alpha bands, which mamol reads as masks, included)."""
    with open_raster(path) as src:
        return src.count


def quantile_table(values: np.ndarray) -> tuple[list[float], list[float]]:
    """The :data:`QUANTILES` quantiles of ``values`` and the standard-normal scores of their
    probabilities; quantiles that coincide (a band with many equal values) become one entry holding
    the mean of their scores, so the table strictly increases."""
    probabilities = (np.arange(QUANTILES) + 0.5) / QUANTILES
    quantiles = np.quantile(values, probabilities)
    scores = np.array([NormalDist().inv_cdf(float(p)) for p in probabilities])
    unique, which = np.unique(quantiles, return_inverse=True)
    merged = np.bincount(which, weights=scores) / np.bincount(which)
    return unique.tolist(), merged.tolist()


def pixel_set(labels: np.ndarray, window: Window, valid: np.ndarray, classes: list[ClassSpec], names: list[str],
              protocol: ProtocolSpec, seed: int, split: str) -> PixelSet:
    """Labelled pixels of ``labels`` inside ``window`` with protocol masks, restricted to valid data."""
    rows, cols = np.nonzero(labels[window.row_off : window.row_off + window.height, window.col_off : window.col_off + window.width])
    index_of = {c.value: i for i, c in enumerate(classes)}
    values = labels[rows + window.row_off, cols + window.col_off]
    has_data = valid[:, rows, cols].T
    presence = assign_presence(len(rows), names, protocol.missing_rate, protocol.missing, seed) & has_data
    keep = presence.any(axis=1)
    no_data, removed = ~has_data.any(axis=1), has_data.any(axis=1) & ~keep
    if no_data.any():
        log.warning("%d labelled %s pixels have no valid data in any sensor and are skipped", int(no_data.sum()), split)
    if removed.any():
        log.warning("%d labelled %s pixels have valid data only in sensors that the missing-sensor protocol drops for them "
                    "(simulating missing sensors), and are skipped", int(removed.sum()), split)
    return PixelSet(rows[keep], cols[keep], np.array([index_of[v] for v in values[keep]], np.int64), presence[keep])


def check_kept_classes(train: PixelSet, scene: Scene) -> None:
    """Stop when fewer than two classes keep training pixels once pixels without data are skipped (a
    model of one class scores 100 % on it), and warn of each labelled class that lost all of its pixels."""
    where = ", ".join(str(m.path) for m in scene.modalities)
    kept = set(np.unique(train.targets).tolist())
    labelled = set(np.unique(scene.train_labels).tolist()) - {0}
    lost = [c.name for i, c in enumerate(scene.classes) if c.value in labelled and i not in kept]
    if len(kept) < 2:
        left = f"only {scene.classes[kept.pop()].name!r} keeps training pixels" if kept else "no training pixel is left"
        raise MamolError(f"{where}: {left} where the sensors hold data ({len(train)} pixels; "
                         f"{', '.join(repr(n) for n in lost)} lie only on nodata); a classifier needs two classes: check the rasters' "
                         "nodata values and extents against the labels")
    if lost:
        log.warning("%s: every training pixel of %s lies on nodata; the model cannot learn %s", where,
                    ", ".join(repr(n) for n in lost), "it" if len(lost) == 1 else "them")


def checked_test_pixels(test: PixelSet, scene: Scene, window: Window, valid: np.ndarray, names: list[str],
                        required: bool) -> PixelSet | None:
    """``test``, after a warning for each given sensor without data under any test label (it is missing on
    all of them); where no test pixel is left to score, an error when scoring is the job (``required``),
    else a warning and ``None`` (training then writes no report)."""
    rows, cols = np.nonzero(scene.test_labels[window.row_off : window.row_off + window.height,
                                              window.col_off : window.col_off + window.width])
    for raster in scene.modalities:
        if not valid[names.index(raster.name), rows, cols].any():
            log.warning("%s: no valid value under any test label; %s counts as missing on every test pixel", raster.path, raster.name)
    if len(test):
        return test
    why = ("no test pixel can be scored: each lies on nodata in every sensor given, or has data only in sensors the protocol "
           "marks missing for it; check the rasters' nodata values and extents against the test labels, or the missing-modality settings")
    if required:
        raise MamolError(f"{', '.join(str(m.path) for m in scene.modalities)}: {why}")
    log.warning("%s; no accuracy report", why)
    return None


def prepare_scene(scene: Scene, protocol: ProtocolSpec, margin: int, specs: list[ModalitySpec] | None = None,
                  held_out: np.ndarray | None = None, normalization: str = "standard",
                  require_test: bool = False) -> tuple[PreparedScene, list[ModalitySpec]]:
    """Read the labelled window, normalise it (with ``specs``, or by ``normalization`` fitted on the
    training pixels) and build the pixel sets; ``held_out`` labels (carved from the training labels)
    become the validation set. Test labels none of whose pixels can be scored stop it with
    ``require_test`` (scoring is the job), else leave no test set (:func:`checked_test_pixels`)."""
    window = label_window(scene, margin, held_out)
    fitting = specs is None
    layout = [ModalitySpec(m.name, m.bands) for m in scene.modalities] if fitting else specs
    paths = {m.name: m.path for m in scene.modalities}
    with AlignedInputs([MapInput(m.name, m.path) for m in scene.modalities], scene.assume_crs, grid=scene.grid) as aligned:
        reader = ModelReader(layout, aligned)
        data, valid = reader.read(window, normalized=False)
        said = partial_bands(data, reader, paths) if fitting else model_input_warnings(data, valid, reader, paths)
        units = [values_unit(d, item.path, aligned.assumed) for d, item in zip(aligned.datasets, aligned.inputs)] if fitting else []
        rasters = [(band_names(d, r), ground_pixel(d, aligned.assumed)) for d, r in zip(aligned.datasets, reader.readings)] \
            if fitting else []
    for name, notes in reader.notes().items():
        log.info("%s: %s", paths[name], "; ".join(notes))
    if fitting:
        train_rows, train_cols = np.nonzero(scene.train_labels[window.row_off : window.row_off + window.height,
                                                               window.col_off : window.col_off + window.width])
        specs = fit_normalization(data, valid, scene, train_rows, train_cols, normalization,
                                  {m.name: reader.file_bands(m.name) for m in scene.modalities})
        for spec, unit, (names, pixel) in zip(specs, units, rasters):
            spec.unit, spec.band_names, spec.ground_pixel = unit, names, pixel
    for line in said:
        log.warning(line)
    normalize(data, valid, specs)
    names = [m.name for m in layout]  # the model's modalities, given or not
    train = pixel_set(scene.train_labels, window, valid, scene.classes, names, protocol, protocol.seed, "training")
    if fitting:
        check_kept_classes(train, scene)
    test = None
    if scene.test_labels is not None and (scene.test_labels > 0).any():
        test = pixel_set(scene.test_labels, window, valid, scene.classes, names, protocol, protocol.seed + TEST_SEED_OFFSET, "test")
        test = checked_test_pixels(test, scene, window, valid, names, require_test)
    validation = None
    if held_out is not None:
        validation = pixel_set(held_out, window, valid, scene.classes, names, protocol, protocol.seed + VALIDATION_SEED_OFFSET,
                               "validation")
    return PreparedScene(data, valid, window, train, test, validation), specs
