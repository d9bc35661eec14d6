"""Benchmark grids: scene x missing rate x condition x method x seed, resumable, one CSV row per cell."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mamol_core import __version__
from mamol_core.atomic import atomic_path, check_folder, record_finished
from mamol_core.backbones import auto_choices
from mamol_core.bench.tables import ADDED_COLUMNS, markdown_table, mean_kappa, read_rows
from mamol_core.config import BackboneSpec, ExpertSpec, LayoutSpec, ProtocolSpec, TrainSpec, split_depth
from mamol_core.data.labels import validation_holdout
from mamol_core.data.protocol import weighted_patterns
from mamol_core.data.scene import Scene
from mamol_core.device import precision_name
from mamol_core.errors import MamolError
from mamol_core.evaluation.metrics import measure_text
from mamol_core.evaluation.predict import evaluate_predictions
from mamol_core.evaluation.score import predict_test_pixels
from mamol_core.modelfile.weights import save_model
from mamol_core.training.fit import StateFiles, hold_out_validation, train_on_scene
from mamol_core.training.loop import schedule_steps

log = logging.getLogger(__name__)

#: Method name -> the configuration it trains: MaMOL, the paper's baselines (Table 1), the ablations
#: (Table 5: baseline = no experts) and expert placements (Table 4: blocks x dynamic experts; the
#: paper's "head 6x2" is mamol_first6, "last 6x2" is mamol; on a 6-block backbone first6 = last6,
#: so mamol_first3 / mamol_last3 compare halves there, and on the 3-block offline default
#: ``minilm-l6@3`` first6, first3 and last3 all fill its 3 blocks: run them on ``minilm-l6``). The routed MoE baselines get MaMOL's routed
#: capacity (2 experts, top-1); ``moe_ada_4x2`` / ``moe_task_4x2`` are the 4-expert top-2 variants.
METHODS: dict[str, ExpertSpec] = {
    "mamol": ExpertSpec(),
    "baseline": ExpertSpec(num_layers=0),
    "no_dynamic": ExpertSpec(num_dynamic=0),
    "no_static": ExpertSpec(shared=False, modality=False),
    "no_modality": ExpertSpec(modality=False),
    "moe_ada": ExpertSpec(method="moe_ada", num_dynamic=2, top_k=1),
    "moe_task": ExpertSpec(method="moe_task", num_dynamic=2, top_k=1),
    "moe_ada_4x2": ExpertSpec(method="moe_ada", num_dynamic=4, top_k=2),
    "moe_task_4x2": ExpertSpec(method="moe_task", num_dynamic=4, top_k=2),
    "moe_rep": ExpertSpec(method="moe_rep", num_dynamic=2, top_k=1),
    "mmp": ExpertSpec(method="mmp", placement="first", num_layers=6, prompt_length=16),
    "dcp": ExpertSpec(method="dcp", placement="first", num_layers=6, prompt_length=36),
    "mamol_first6": ExpertSpec(placement="first", num_layers=6),
    "mamol_first3": ExpertSpec(placement="first", num_layers=3),
    "mamol_last3": ExpertSpec(placement="last", num_layers=3),
    "mamol_last2x5": ExpertSpec(placement="last", num_layers=2, num_dynamic=5),
}

FIELDS = ["scene", "missing_rate", "condition", "method", "seed", "backbone", "patch_size", "token_size", "tokenizer_hidden", "encoding", "epochs",
          "min_steps", "modality_dropout", "rotation", "normalization", "expert_lr_scale", "rank", "early_stopping", "patience",
          "steps", "best_step", "trainable_params", "split", "oa", "kappa", "aa", "per_pattern_oa", "oa_by_mode", "train_s", "eval_s", "cpu_s",
          "eval_mode", "device", "precision", "hardware", "mamol_version"]



@dataclass(frozen=True)
class Cell:
    """One benchmark cell."""

    scene: str
    missing_rate: float
    condition: str
    method: str
    seed: int

    def key(self) -> tuple:
        return (self.scene, f"{self.missing_rate:g}", self.condition, self.method, str(self.seed))

    def stem(self) -> str:
        """The cell's file name stem (its model, its training state)."""
        return f"{self.scene}_{self.method}_{self.condition}_{self.missing_rate:g}_s{self.seed}"


def cpu_description(cpuinfo: str) -> str | None:
    """The first processor of a ``/proc/cpuinfo`` text: its model name, and its family and model numbers
    where the text has them (a model name such as "AMD EPYC" is shared by processor generations that
    differ in speed and in bf16 support); ``None`` without a model name."""
    first: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if first:
                break
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    if not first.get("model name"):
        return None
    numbers = f", family {first['cpu family']} model {first['model']}" if first.get("cpu family") and first.get("model") else ""
    return first["model name"] + numbers


def hardware_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's description (:func:`cpu_description`) and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        model = cpu_description(Path("/proc/cpuinfo").read_text())
    except OSError:
        model = None
    return f"{model or platform.processor() or 'CPU'} ({os.cpu_count()} threads)"


def finished(results: Path) -> set[tuple]:
    if not results.is_file():
        return set()
    with open(results, newline="") as handle:
        return {(r["scene"], f"{float(r['missing_rate']):g}", r["condition"], r["method"], r["seed"]) for r in csv.DictReader(handle)}


def check_results(results: Path, grid: "Grid") -> None:
    """Refuse to add cells to a ``results.csv`` of other columns (an older mamol-bench) or of another
    setup (layout, budget, split, headline evaluation, backbone), which would mix in one table."""
    if not results.is_file():
        return
    fix = "mend or remove that row, or pass another -o folder for this grid"
    rows = read_rows(results, columns=(), numbers=(), fix=fix)  # CSV text at all
    whole = results.read_bytes()
    if whole and not whole.endswith(b"\n"):  # the next row would be joined to this one
        raise MamolError(f"{results}: line {len(rows) + 1}: the row is cut short (no line end); {fix}")
    cut = next((line for line, row in enumerate(rows, start=2) if None in row or None in row.values()), None)
    if cut is not None:
        raise MamolError(f"{results}: line {cut}: the row has fewer or more fields than the header; {fix}")
    add_missing_columns(results)
    with open(results, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != FIELDS:
            raise MamolError(f"{results}: holds other columns than mamol-bench run writes (an older mamol-bench's, or no results "
                             "file); pass a new -o folder for this grid")
        wanted = grid.setup()
        name, depth = split_depth(grid.backbone)
        resolved = auto_choices(depth) if name == "auto" else ()  # auto resolves per machine
        for row in reader:
            found = {k: row[k] for k in wanted}
            compared = dict(found)
            if found["backbone"] in resolved:
                compared["backbone"] = grid.backbone
            if compared != wanted:
                differ = ", ".join(f"{k} {found[k]} (this grid: {wanted[k]})" for k in wanted if compared[k] != wanted[k])
                raise MamolError(f"{results}: holds cells of another setup ({differ}); pass another -o folder for this grid")


def add_missing_columns(results: Path) -> None:
    """Give a ``results.csv`` written before some of :data:`ADDED_COLUMNS` existed those columns,
    with the value every run of that time had, rewritten whole under a temporary name, so that its
    grid can be resumed."""
    with open(results, newline="") as handle:
        reader = csv.DictReader(handle)
        found = reader.fieldnames or []
        missing = [f for f in FIELDS if f not in found]
        if not missing or not set(missing) <= set(ADDED_COLUMNS) or found != [f for f in FIELDS if f not in missing]:
            return
        rows = [{**row, **{column: ADDED_COLUMNS[column] for column in missing}} for row in reader]
    with atomic_path(results) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    log.info("%s: written before the columns %s were recorded; its %d rows now hold what those runs had (%s)", results,
             ", ".join(missing), len(rows), ", ".join(f"{c} {ADDED_COLUMNS[c] or 'unrecorded'}" for c in missing))


def append_row(results: Path, row: dict) -> None:
    new = not results.is_file()
    with open(results, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())
    record_finished(results)


@dataclass
class Grid:
    """A benchmark grid over one scene, and how each cell is trained and evaluated.

    ``eval_modes`` are ``pixel`` (one centred patch per pixel), ``dense`` (blended tiles at the
    default stride) or ``dense@S`` (stride ``S``); the first gives the row's ``oa``, kappa and
    per-pattern OA, all of them go to its ``oa_by_mode`` (tables lead with ``pixel``). With ``validation`` > 0 about that share of the training labels (whole
    blocks of ``VALIDATION_BLOCK`` pixels, or whole fields with ``validation_unit`` ``fields``) is held out, the model trains on the rest and is scored on the held-out part
    only: the split for choosing settings, which never reads the test labels. With ``early_stopping`` > 0
    that share of the (remaining) training labels is held out to keep each run's best weights and,
    with ``patience``, to stop it early (:class:`TrainSpec`'s ``validation``). ``rank`` is every LoRA
    expert's rank (:meth:`ExpertSpec.with_rank`, as ``mamol-train --rank``), for every method that has experts.
    """

    rates: list[str]
    conditions: list[str]
    methods: list[str]
    seeds: list[str]
    modalities: list[str] = dataclasses.field(default_factory=list)
    backbone: str = "auto"
    layout: LayoutSpec = dataclasses.field(default_factory=LayoutSpec)
    epochs: int = TrainSpec.epochs
    min_steps: int = TrainSpec.min_steps
    eval_modes: list[str] = dataclasses.field(default_factory=lambda: ["pixel", "dense"])
    validation: float = 0.0
    save_models: bool = False
    modality_dropout: float = 0.0
    early_stopping: float = 0.0
    patience: int = 0
    rotation: str = TrainSpec.rotation
    validation_unit: str = "blocks"
    normalization: str = TrainSpec.normalization
    expert_lr_scale: float = TrainSpec.expert_lr_scale
    rank: int = ExpertSpec.rank

    @property
    def split(self) -> str:
        """What the cells are scored on: ``test``, ``validation`` (held-out blocks) or ``validation-fields``."""
        if self.validation <= 0:
            return "test"
        return "validation" if self.validation_unit == "blocks" else f"validation-{self.validation_unit}"

    def setup(self) -> dict[str, str]:
        """The settings every row of one results file shares, as written in its columns (each row starts from them)."""
        return {"backbone": self.backbone, "patch_size": str(self.layout.patch_size), "token_size": str(self.layout.token_size),
                "tokenizer_hidden": str(self.layout.hidden),
                "encoding": self.layout.encoding, "epochs": str(self.epochs), "min_steps": str(self.min_steps),
                "modality_dropout": f"{self.modality_dropout:g}", "early_stopping": f"{self.early_stopping:g}",
                "patience": str(self.patience), "rotation": self.rotation, "normalization": self.normalization,
                "expert_lr_scale": f"{self.expert_lr_scale:g}", "rank": str(self.rank), "split": self.split,
                "eval_mode": self.eval_modes[0]}

    def cells(self, name: str) -> list[Cell]:
        """Every cell of the grid: rates x conditions x methods x seeds."""
        return [Cell(name, float(r), c, m, int(s)) for r in self.rates for c in self.conditions for m in self.methods for s in self.seeds]


def parse_eval_mode(mode: str) -> tuple[str, int | None]:
    """``pixel``, ``dense`` or ``dense@S`` -> (mode, stride or None)."""
    name, _, stride = mode.partition("@")
    if name not in ("pixel", "dense") or (stride and (name != "dense" or not stride.isdigit() or int(stride) < 1)):
        raise MamolError(f"--eval-mode {mode}: use pixel, dense or dense@STRIDE (e.g. dense@6)")
    return name, int(stride) if stride else None


#: Side of the square blocks a validation split holds out whole, in pixels.
VALIDATION_BLOCK = TrainSpec.validation_block  # the same blocks mamol-train --validation holds out


def validation_scene(scene: Scene, fraction: float, seed: int, unit: str = "blocks") -> Scene:
    """The scene with about ``fraction`` of its training labels, in whole ``VALIDATION_BLOCK`` blocks
    or whole fields (``unit``), moved to the test side (the test labels are not read)."""
    train, held_out = validation_holdout(scene.train_labels, fraction, seed, unit, VALIDATION_BLOCK, scene.classes)
    if not held_out.any():
        other = "blocks" if unit == "fields" else "fields"
        raise MamolError(f"the training labels give no validation {unit} to hold out (seed {seed}); "
                         f"try --validation-unit {other}, or label more {unit}")
    return dataclasses.replace(scene, train_labels=train, test_labels=held_out)


def check_grid_values(grid: Grid) -> None:
    """One-line errors, naming mamol-bench's own options, for methods, rates or seeds no cell can run, before any
    data is read."""
    unknown = [m for m in grid.methods if m not in METHODS]
    if unknown:
        raise MamolError(f"--methods: unknown method {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    for rate in grid.rates:
        try:
            ok = 0 <= float(rate) <= 1
        except ValueError:
            ok = False
        if not ok:
            raise MamolError(f"--rates {rate}: give missing rates between 0 and 1, comma-separated (0.7 for 70%)")
    for seed in grid.seeds:
        try:
            int(seed)
        except ValueError:
            raise MamolError(f"--seeds {seed}: give whole numbers, comma-separated (0,1,2)") from None


def check_grid_scene(grid: Grid, scene: Scene) -> None:
    """One-line errors, naming mamol-bench's own options, for conditions of modalities the ``scene`` lacks and an
    --early-stopping share its training labels cannot give in some seed, before any cell trains."""
    for condition in grid.conditions if len(scene.names) > 1 else []:
        try:
            weighted_patterns(scene.names, condition)
        except MamolError:
            raise MamolError(f"--conditions {condition}: not a missing condition of {', '.join(scene.names)}; give both, subsets, "
                             "one modality's name, or weighted names such as NAME:1+NAME:2") from None
    for seed in map(int, grid.seeds) if grid.early_stopping > 0 else []:
        held = validation_scene(scene, grid.validation, seed, grid.validation_unit) if grid.validation > 0 else scene
        try:
            hold_out_validation(held, TrainSpec(validation=grid.early_stopping, seed=seed))
        except MamolError:
            raise MamolError(f"--early-stopping {grid.early_stopping:g}: the training labels{' that --validation leaves' if grid.validation else ''} "
                             f"are too few or too clustered to hold out blocks of {VALIDATION_BLOCK} px (seed {seed}); label more, or run "
                             "without --early-stopping") from None


def run_cell(cell: Cell, scene: Scene, grid: Grid, device: torch.device, amp_dtype: torch.dtype | None, progress_mode: str,
             model_dir: Path | None, state: StateFiles) -> dict:
    """Train and evaluate one cell, resumably with ``state``; returns its CSV row."""
    if cell.method not in METHODS:
        raise MamolError(f"unknown method {cell.method!r}; choose from {', '.join(METHODS)}")
    modes = [parse_eval_mode(m) for m in grid.eval_modes]
    if grid.validation > 0:
        scene = validation_scene(scene, grid.validation, cell.seed, grid.validation_unit)
        held, kept = int((scene.test_labels > 0).sum()), int((scene.train_labels > 0).sum())
        log.info("scoring on %d held-out training pixels in whole %s, %.0f %% of the training labels (--validation %g)", held,
                 grid.validation_unit, 100 * held / (held + kept), grid.validation)
    protocol = ProtocolSpec(cell.missing_rate, cell.condition, cell.seed)
    cpu_start = time.process_time()
    run = train_on_scene(scene, BackboneSpec(grid.backbone), METHODS[cell.method].with_rank(grid.rank), grid.layout, protocol,
                         TrainSpec(epochs=grid.epochs, min_steps=grid.min_steps, seed=cell.seed, modality_dropout=grid.modality_dropout,
                                   validation=grid.early_stopping, patience=grid.patience, rotation=grid.rotation,
                                   normalization=grid.normalization, expert_lr_scale=grid.expert_lr_scale),
                         device, amp_dtype, progress_mode, state)
    if run.prepared.test is None:
        raise MamolError(f"{cell.scene}: no test pixel to score (no test_labels.tif, or none of its pixels lies on data under the "
                         "protocol); benchmarks need test labels on the rasters")
    blocks = len(run.model.backbone.blocks)
    if cell.method.startswith("mamol_") and len(run.model.expert_layers) == blocks:
        log.warning("%s: the backbone %s has %d blocks, so this placement puts experts in every block, as mamol does; "
                    "compare placements on a deeper backbone", cell.method, run.config.model.backbone.name, blocks)
    start = time.perf_counter()
    evaluations = {}
    for text, (mode, stride) in zip(grid.eval_modes, modes):
        predicted = predict_test_pixels(run.model, run.prepared, mode, stride, amp_dtype, 256, progress_mode, device)
        evaluations[text] = evaluate_predictions(run.prepared.test, predicted, [c.name for c in scene.classes], scene.names)
    eval_seconds = time.perf_counter() - start
    if model_dir is not None:
        model_dir.mkdir(parents=True, exist_ok=True)
        save_model(run.model, run.config, model_dir / f"{cell.stem()}.safetensors")
    summaries = evaluations[grid.eval_modes[0]].summaries
    overall = summaries.pop("overall")
    return {**grid.setup(), "scene": cell.scene, "missing_rate": f"{cell.missing_rate:g}", "condition": cell.condition, "method": cell.method,
            "seed": cell.seed, "backbone": run.config.model.backbone.name, "steps": schedule_steps(len(run.prepared.train), run.config.train),
            "best_step": run.config.validation.best_step if run.config.validation is not None else "",
            "trainable_params": run.model.trainable_parameters(), "oa": f"{overall['oa']:.2f}", "kappa": measure_text(overall["kappa"]),
            "aa": f"{overall['aa']:.2f}", "per_pattern_oa": json.dumps({k: round(v["oa"], 2) for k, v in summaries.items()}),
            "oa_by_mode": json.dumps({k: round(e.overall["oa"], 2) for k, e in evaluations.items()}),
            "train_s": f"{run.seconds:.0f}", "eval_s": f"{eval_seconds:.0f}",
            "cpu_s": f"{time.process_time() - cpu_start + run.other_cpu_seconds:.0f}",
            "device": str(device), "precision": precision_name(amp_dtype),
            "hardware": hardware_name(device), "mamol_version": __version__}


def run_grid(scene_dir: Path, name: str, grid: Grid, output: Path, device: str, precision: str, progress_mode) -> None:
    """Run every cell of ``grid`` not yet in ``output/results.csv`` (resumable: finished cells are skipped, and
    a cell stopped during training continues from its state in ``output/states/``)."""
    from mamol_core.data.scene import open_scene, select_modalities
    from mamol_core.device import autocast_dtype, resolve_device

    check_grid_values(grid)
    grid.layout.check()
    for mode in grid.eval_modes:
        _, stride = parse_eval_mode(mode)
        if stride is not None and stride > grid.layout.patch_size:
            raise MamolError(f"--eval-mode {mode}: the stride must not exceed the tile side ({grid.layout.patch_size} px)")
    if not 0 <= grid.validation < 1:
        raise MamolError(f"--validation {grid.validation}: give a share between 0 and 1, e.g. 0.25")
    scene = select_modalities(open_scene(scene_dir, disjoint=True), grid.modalities)
    check_grid_scene(grid, scene)
    compute = resolve_device(device)
    amp = autocast_dtype(compute, precision)
    check_folder(output)
    results = output / "results.csv"
    check_results(results, grid)
    cells = grid.cells(name)
    done = finished(results)
    todo = [c for c in cells if c.key() not in done]
    log.info("%d cells, %d finished already, %d to run", len(cells), len(cells) - len(todo), len(todo))
    states = output / "states"
    check_folder(states)
    made = [folder for folder in (states, output / "models", output, *output.parents) if not folder.exists()]
    states.mkdir(parents=True, exist_ok=True)
    try:
        for cell in cells:  # a state left by a cell whose row was written (a process stopped in between)
            if cell.key() in done:
                (states / f"{cell.stem()}.state.safetensors").unlink(missing_ok=True)
        for index, cell in enumerate(todo, start=1):
            log.info("[%d/%d] %s", index, len(todo), cell)
            state = StateFiles(states / f"{cell.stem()}.state.safetensors", resume_if_same=True)
            append_row(results, run_cell(cell, scene, grid, compute, amp, progress_mode,
                                         output / "models" if grid.save_models else None, state))
            state.path.unlink(missing_ok=True)
    finally:  # no empty folder left: the states once every cell is done, those this run made if it stopped before any row
        for folder in dict.fromkeys([states, *made]):  # the deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


#: The paper's Table 1 grid per dataset (modalities used, condition names in our terms) and Table 3's rows.
PAPER_DATASETS = {"houston2013": ("Houston13", ["hsi", "lidar"]), "trento": ("Trento", ["hsi", "lidar"]),
                  "augsburg": ("Augsburg", ["hsi", "sar"])}
TABLE1_METHODS = ["mmp", "dcp", "moe_rep", "moe_ada", "moe_task", "mamol"]
TABLE3_CONDITIONS = {"both": (75, 75, 75), "sar:1+dsm:2": (100, 75, 50), "hsi:2+dsm:1": (50, 100, 75), "hsi:1+sar:2": (75, 50, 100)}


def paper_grid(dataset: str, table: str, methods: list[str] | None, seeds: list[str], backbone: str, epochs: int,
               min_steps: int = TrainSpec.min_steps) -> Grid:
    """The grid of the paper's Table 1 (rates 50/70/90% x other/HS/both missing) or Table 3 (Augsburg, 75%)."""
    if table == "3":
        if dataset != "augsburg":
            raise MamolError("Table 3 is the three-modality Augsburg experiment; use --dataset augsburg")
        return Grid(["0.75"], list(TABLE3_CONDITIONS), methods or ["mamol"], seeds, [], backbone, epochs=epochs, min_steps=min_steps)
    _, (hs, other) = PAPER_DATASETS[dataset]
    return Grid(["0.5", "0.7", "0.9"], [other, hs, "both"], methods or TABLE1_METHODS, seeds, [hs, other], backbone, epochs=epochs,
                min_steps=min_steps)


def paper_table(results: Path, dataset: str, table: str, numbers: Path | None) -> str:
    """Our results beside the paper's numbers for the same cells."""
    folder = numbers or Path(__file__).resolve().parents[3] / "shared" / "bench"
    if table == "3":
        return table3_markdown(results, folder / "paper_table3_augsburg3.csv")
    paper_name, (hs, other) = PAPER_DATASETS[dataset]
    paper = folder / "paper_table1.csv"
    return markdown_table(results, paper=paper if paper.is_file() else None, paper_dataset=paper_name,
                          paper_map=f"{other}=missing_other,{hs}=missing_hs,both=missing_both")


#: What Table 3's CSV holds: the availability (%) of each sensor, and the paper's scores.
TABLE3_COLUMNS = ("hs_available", "sar_available", "lidar_available", "oa", "kappa")


def table3_markdown(results: Path, paper: Path) -> str:
    """Table 3 rows (availability of HS / SAR / DSM) with our OA/kappa and the paper's."""
    published = {}
    if paper.is_file():
        for p in read_rows(paper, TABLE3_COLUMNS, TABLE3_COLUMNS, "pass the paper's Table 3 CSV (../shared/bench/paper_table3_augsburg3.csv)"):
            published[(int(p["hs_available"]), int(p["sar_available"]), int(p["lidar_available"]))] = p
    lines = ["| condition | HS / SAR / DSM available | method | OA / κ | paper MaMOL OA / κ |", "|---|---|---|---|---|"]
    for row in read_rows(results):
        available = TABLE3_CONDITIONS.get(row["condition"])
        shares = " / ".join(f"{a}%" for a in available) if available else ""
        p = published.get(available)
        theirs = f"{float(p['oa']):.2f} / {float(p['kappa']):.2f}" if p else ""
        lines.append(f"| {row['condition']} | {shares} | {row['method']} | {float(row['oa']):.2f} / {mean_kappa([row])} | {theirs} |")
    return "\n".join(lines) + "\n"
