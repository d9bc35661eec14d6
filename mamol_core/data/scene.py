"""A scene: modality rasters read on one grid, training and test labels, and a class table.

A scene folder holds ``<modality>.tif`` files, ``train_labels.tif``, ``test_labels.tif`` and
``classes.json``. ``--input NAME=PATH`` adds or replaces a modality; ``--labels`` gives ground truth
as a raster or as vector points/polygons with a class field.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mamol_core.config import ClassSpec, GridSpec
from mamol_core.errors import MamolError
from mamol_core.mapping.align import AlignedInputs, MapInput, effective_grid, shared_grid
from mamol_core.mapping.crs import crs_name, parse_crs
from mamol_core.data.labels import (
    check_label_values,
    check_same_table,
    default_classes,
    embedded_classes,
    grouped_holdout,
    is_label_raster,
    is_raster,
    load_class_table,
    names_classes,
    rasterize_vector,
    read_label_raster,
    recode_by_name,
    table_clash,
)
from mamol_core.data.plausibility import file_warnings
from mamol_core.data.rasters import Grid, ModalityRaster, describe_modality, is_flipped, same_grid, stack_hint
from mamol_core.data.sources import check_one_file_each
from mamol_core.mapping.outputs import is_map_output

log = logging.getLogger(__name__)

TRAIN_LABELS, TEST_LABELS, CLASS_TABLE = "train_labels", "test_labels", "classes.json"
RESERVED = {TRAIN_LABELS, TEST_LABELS}


@dataclass
class Scene:
    """Modality rasters read on ``grid`` (warped where they lie on another, ``assume_crs`` for those
    without a CRS), label arrays on that grid (0 = unlabelled) and classes."""

    modalities: list[ModalityRaster]
    grid: Grid
    train_labels: np.ndarray
    test_labels: np.ndarray | None
    classes: list[ClassSpec]
    assume_crs: str | None = None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modalities]


def parse_inputs(pairs: tuple[str, ...] | list[str], flag: str = "--input",
                 given: dict[str, tuple[Path, str]] | None = None, usage: str | None = None) -> dict[str, Path]:
    """``NAME=PATH`` pairs from the command line (``flag`` names the option in errors, ``usage`` its form), added to the
    modalities already ``given`` by other options (name -> (path, option)); a modality given twice is refused."""
    seen = dict(given or {})
    for pair in pairs:
        name, sep, path = pair.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise MamolError(f"{flag} {pair!r}: write {usage or f'NAME=PATH, e.g. {flag} lidar=dsm.tif'}")
        if name in seen:
            earlier, option = seen[name]
            raise MamolError(f"{flag} {pair!r}: modality {name!r} was already given by {option} ({earlier}); give each modality once "
                             f"(its bands as separate files: stack them first, {stack_hint(name, f'{shlex.quote(str(earlier))} {shlex.quote(path)} …')})")
        seen[name] = (Path(path), flag)
    return {name: path for name, (path, _) in seen.items()}


def select_modalities(scene: Scene, names: list[str] | None) -> Scene:
    """The scene restricted to the modalities ``names`` (all when None)."""
    if not names:
        return scene
    unknown = [n for n in names if n not in scene.names]
    if unknown:
        raise MamolError(f"--modalities {','.join(names)}: the scene has no {', '.join(unknown)}; it has {', '.join(scene.names)}")
    return dataclasses.replace(scene, modalities=[m for m in scene.modalities if m.name in names])


def find_modalities(folder: Path | None, inputs: dict[str, Path], labels: dict[str, Path] | None = None) -> dict[str, Path]:
    """Modality files of a scene folder (by file stem, label files excluded: ``*_labels`` and the files
    ``labels`` gives, option -> path), then ``inputs``; a file of the folder that ``--input NAME=PATH``
    names takes that name instead of its stem (``--scene sample_data --input lidar=sample_data/dsm.tif``
    gives lidar, not dsm). A label file given as an input is refused."""
    given = {os.path.realpath(path): option for option, path in (labels or {}).items() if path is not None}
    for name, path in inputs.items():
        if (option := given.get(os.path.realpath(path))) is not None:
            raise MamolError(f"{path}: given as the {name} raster and as {option}; labels are not a sensor, give each its own file")
    found: dict[str, Path] = {}
    if folder is not None:
        if not folder.is_dir():
            if folder.exists():
                raise MamolError(f"{folder}: --scene takes a folder of rasters, this is a file; pass the folder that "
                                 "holds it (mamol-train also takes single rasters as --input NAME=PATH)")
            raise MamolError(f"{folder}: no such scene folder; pass a folder of GeoTIFFs (see README)")
        for path in sorted(folder.iterdir()):
            if is_raster(path) and path.stem not in RESERVED and not path.stem.endswith("_labels"):
                if is_map_output(path):
                    log.info("%s: a map mamol-map wrote, not a sensor; left out of the scene", path)
                    continue
                if (option := given.get(os.path.realpath(path))) is not None:
                    log.info("%s: given as %s, not a sensor; left out of the scene", path, option)
                    continue
                found[path.stem] = path
    claimed = {os.path.realpath(path) for path in inputs.values()}
    found = {name: path for name, path in found.items() if os.path.realpath(path) not in claimed}
    for name in sorted(set(found) & set(inputs)):
        log.info("--input %s=%s: used for %s instead of the scene's %s", name, inputs[name], name, found[name])
    found.update(inputs)
    check_one_file_each(found)
    if not found:
        raise MamolError(f"{folder or 'the command line'}: no modality rasters found; add <name>.tif files or --input NAME=PATH")
    return found


def open_scene(
    folder: Path | None,
    inputs: dict[str, Path] | None = None,
    labels: Path | None = None,
    label_field: str | None = None,
    test_labels: Path | None = None,
    classes: Path | list[ClassSpec] | None = None,
    holdout: float = 0.3,
    seed: int = 0,
    for_training: bool = True,
    disjoint: bool = False,
    reference: Path | None = None,
    assume_crs: str | None = None,
    model_grid: GridSpec | None = None,
) -> Scene:
    """Assemble and validate a scene; every problem stops here with a one-line error naming the file.

    ``classes`` is a class-table file or a ready table (a model's); without it, the folder's
    ``classes.json``, else the one beside the training labels; a label raster whose own table beside it
    gives a code another name is refused. Test labels scored against a model's table follow their own
    table (beside them, else the scene's) and are matched to the model's classes by name. Without test labels, training
    scenes hold out ``holdout`` of the labelled groups for testing. With ``for_training=False`` only
    test labels are read (``test_labels``, else ``--labels``, else the folder's test_labels.tif).
    Training and test labels that share pixels are refused with ``disjoint`` (benchmarks), else warned about.
    Rasters on different grids are aligned as for mapping: the finest one's grid (or ``reference``'s)
    over the union of their extents, at ``model_grid``'s pixel size when a model is evaluated; label
    rasters on another grid are warped onto it.
    """
    folder = Path(folder) if folder is not None else None
    label_raster = functools.cache(is_label_raster)  # GDAL probes a labels file without a raster suffix once
    paths = find_modalities(folder, inputs or {}, {"--labels": labels, "--test-labels": test_labels})
    rasters, grids = zip(*(describe_modality(name, path) for name, path in paths.items()))
    for warning in [line for path in paths.values() for line in file_warnings(path)]:
        log.warning(warning)
    grid = scene_grid(rasters, grids, reference, assume_crs, model_grid)
    table = _class_table(folder, classes)
    if table is None and labels is not None and for_training:  # none given or in the scene: the one beside the labels
        table = _class_table(Path(labels).parent, None)
        if table is not None:
            log.info("%s: class names and colours from %s beside it", labels, Path(labels).parent / CLASS_TABLE)
    table_source = (folder / CLASS_TABLE if folder is not None and (folder / CLASS_TABLE).is_file() else
                    Path(labels).parent / CLASS_TABLE if labels is not None else None)  # where the table was found
    if table is not None and for_training and classes is None:  # label rasters whose own table numbers otherwise
        for path in (labels, test_labels):
            if path is not None and label_raster(Path(path)):
                check_same_table(Path(path), Path(path).parent / CLASS_TABLE, table, table_source)
    given = table  # the class table given or found, before labels without one number their classes

    models = isinstance(classes, list)  # a model's classes: labels are scored against them
    own = None  # where a model is scored: the table the test labels' codes follow (beside them, else the scene's)

    if label_field and not any(p is not None and not label_raster(Path(p)) for p in (labels, test_labels)):
        log.warning("--label-field %s: no vector labels given (label rasters' values are the classes); it is not used", label_field)

    def read(path: Path, untrained: str | None = None) -> tuple[np.ndarray, np.ndarray | None, list[ClassSpec]]:
        """Labels at ``path`` on the grid, their groups and class table; ``untrained`` says what to do
        about a class the table lacks where the table came from the training labels."""
        if label_raster(path):
            values = read_label_raster(path, grid, table)
            named = embedded_classes(path)
            if named is not None and table is not None and not models and names_classes(table):  # not numbered labels' table
                check_own_names(path, named, table, table_source if given is not None else "the training labels' own table",
                                explicit=classes is not None)
            found = table or named or default_classes(sorted(set(np.unique(values).tolist()) - {0}))
            if table is None and named is not None:
                log.info("%s: class names from its own (%s)", path, ", ".join(f"{c.value}={c.name}" for c in found))
            check_label_values(values, found, path, "relabel them as 0 or evaluate a model trained with those classes"
                               if models else untrained or "add them to classes.json or relabel them as 0")
            return values, None, found
        checked = not models and given is not None and classes is None and table_source is not None  # as label rasters are
        return rasterize_vector(path, label_field, grid, table, "relabel them or evaluate a model trained with those classes"
                                if models else untrained or "add them to classes.json", models, own,
                                (path.parent / CLASS_TABLE, table_source) if checked else None)

    if not for_training:
        test_path = test_labels or labels or (folder / f"{TEST_LABELS}.tif" if folder is not None else None)
        if test_path is None or not Path(test_path).exists():
            raise MamolError(f"{test_path or 'no --labels'}: test labels not found; add {TEST_LABELS}.tif to the scene or pass --labels FILE")
        if models:  # the labels' codes follow the class table beside them, else their own class names, else the scene's table
            beside = Path(test_path).parent / CLASS_TABLE
            embedded = embedded_classes(Path(test_path)) if not beside.is_file() and label_raster(Path(test_path)) else None
            own_path = next((p for p in (beside, folder / CLASS_TABLE if folder else None) if p is not None and p.is_file()), None)
            if embedded is not None:
                own, own_path = embedded, "its own class names"
            else:
                own = load_class_table(own_path) if own_path is not None else None
        if own is not None and label_raster(Path(test_path)):  # labels coded by their own table: match the model's by name
            log.info("%s: its codes are those of %s, matched to the model's classes by name", test_path, own_path)
            test = recode_by_name(read_label_raster(Path(test_path), grid, own), own, classes, Path(test_path))
            return Scene(list(rasters), grid, np.zeros_like(test), labelled(test, test_path), classes, assume_crs)
        if models and label_raster(Path(test_path)):
            log.warning("%s: no class table beside it; its codes are read as the model's (%s)", test_path,
                        ", ".join(f"{c.value}={c.name}" for c in classes))
        test, _, table = read(Path(test_path))
        return Scene(list(rasters), grid, np.zeros_like(test), labelled(test, test_path), table, assume_crs)

    train_path = labels or (folder / f"{TRAIN_LABELS}.tif" if folder is not None else None)
    if train_path is None or not Path(train_path).exists():
        raise MamolError(f"{train_path or 'no --labels'}: training labels not found; add {TRAIN_LABELS}.tif to the scene or pass --labels FILE")
    train, groups, table = read(Path(train_path))

    if test_labels is not None and not Path(test_labels).exists():
        raise MamolError(f"{test_labels}: test labels not found; check the path, or leave --test-labels out"
                         + (f" to hold out {holdout:.0%} of the labelled features for testing" if holdout else ""))
    test_path = test_labels or (folder / f"{TEST_LABELS}.tif" if folder is not None and labels is None else None)
    test = None
    if test_path is not None and Path(test_path).exists():
        test = read(Path(test_path), None if given else f"no training label of {train_path} is of such classes, so the model cannot "
                    "learn them: add training labels of them, or leave those test labels out (0)")[0]
        numbered = given is None and not label_raster(Path(train_path)) and label_raster(Path(test_path)) and \
            names_classes(table)
        if numbered:  # names of a vector field, numbered by mamol: the raster's codes may follow another numbering
            log.warning("%s: its codes are read as the numbers given to the class names of %s (%s); if they follow another "
                        "numbering, give the class table (--classes classes.json)", test_path, train_path,
                        ", ".join(f"{c.value}={c.name}" for c in table))
        if not (test > 0).any():
            log.warning("%s: no labelled pixel on the scene grid, so no accuracy report; check the labels and their extent%s",
                        test_path, f", or move the file away to hold out {holdout:.0%} of the training labels instead"
                        if test_labels is None and holdout else "")
        overlap = int(((train > 0) & (test > 0)).sum())
        if overlap and disjoint:
            raise MamolError(f"{test_path}: shares {overlap} labelled pixels with {train_path}; a benchmark needs disjoint "
                             "training and test labels: remove the shared pixels from one of them")
        if overlap:
            log.warning("%s and %s share %d labelled pixels; the model trains on them, so its accuracy on them will be optimistic "
                        "(label other places for testing)", train_path, test_path, overlap)
    elif holdout > 0:
        train, test = grouped_holdout(train, groups, holdout, seed, table)
        log.info("no test labels: %d labelled pixels held out by whole groups for testing", int((test > 0).sum()))
    if not (train > 0).any():
        raise MamolError(f"{train_path}: no labelled training pixels on the scene grid; check the labels and their extent")
    present = sorted(set(np.unique(train).tolist()) - {0})
    if len(present) < 2:
        name = next((c.name for c in table if c.value == present[0]), f"class {present[0]}")
        raise MamolError(f"{train_path}: every training pixel is {name!r}; a classifier needs labels of at least two classes")
    untrained = [c.name for c in table if c.value not in present]
    if untrained:
        log.warning("%s: no training pixel of %s on the scene grid; the model cannot learn %s", train_path,
                    ", ".join(repr(n) for n in untrained), "it" if len(untrained) == 1 else "them")
    return Scene(list(rasters), grid, train, test, table, assume_crs)


def labelled(test: np.ndarray, path: Path) -> np.ndarray:
    """``test`` (labels read from ``path`` to score a model on), or a one-line error where it holds no labelled pixel."""
    if not (test > 0).any():
        raise MamolError(f"{path}: no labelled pixel on the scene grid (every value is 0 or nodata there); check the labels and "
                         "their extent")
    return test


def scene_grid(rasters: tuple[ModalityRaster, ...], grids: tuple[Grid, ...], reference: Path | None, assume_crs: str | None,
               model_grid: GridSpec | None = None) -> Grid:
    """The grid a scene's rasters are read on: theirs when they share one (and neither ``reference``
    nor a ``model_grid`` of another pixel size says otherwise), else the aligned grid mapping would
    use (:class:`AlignedInputs`; at the model's training pixel size when evaluating a model)."""
    assumed = parse_crs(assume_crs)
    own = [effective_grid(g, assumed, r.path) for g, r in zip(grids, rasters)]
    shared = shared_grid(own, model_grid)
    if reference is None and shared is not None:
        return shared
    with AlignedInputs([MapInput(r.name, r.path) for r in rasters], assume_crs, reference, model_grid=model_grid) as aligned:
        grid = aligned.grid
    flipped = reference is None and all(same_grid(g, own[0]) for g in own) and is_flipped(own[0])
    log.info("%s: read on one grid of %s, pixel %g x %g, %dx%d px (warped where needed)",
             "rasters stored y-up" if flipped else "rasters on different grids", crs_name(grid.crs), *grid.pixel_size, grid.width,
             grid.height)
    return grid


def check_own_names(labels: Path, named: list[ClassSpec], table: list[ClassSpec], source: Path | str, explicit: bool) -> None:
    """Stop when the class names the label raster ``labels`` carries (``named``) give one of its codes another name than
    the ``table`` training reads it with (from ``source``) does; a table given ``explicit``-ly (``--classes``) is read
    as it says, with a word."""
    found = table_clash(named, table)
    if found is None:
        return
    clash, other = found
    if explicit:
        log.info("%s: its own class names call code %d %r, where --classes calls it %r; read by --classes", labels, clash.value,
                 clash.name, other)
        return
    raise MamolError(f"{labels}: its own class names call code {clash.value} {clash.name!r}, where {source}, which training reads "
                     f"its codes with, calls it {other!r}; give a class table its codes follow (--classes FILE) or make the two alike")


def _class_table(folder: Path | None, classes: Path | list[ClassSpec] | None) -> list[ClassSpec] | None:
    if isinstance(classes, list):
        return classes
    if classes is not None:
        if not Path(classes).is_file():
            raise MamolError(f"{classes}: no such class table; pass a classes.json")
        return load_class_table(Path(classes))
    default = folder / CLASS_TABLE if folder is not None else None
    return load_class_table(default) if default is not None and default.is_file() else None
