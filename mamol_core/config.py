"""Configuration dataclasses: the single source of truth, saved inside every model file."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from mamol_core import FORMAT_VERSION, FORMATS_READ, __version__
from mamol_core.errors import MamolError


#: How band values are normalised before the tokenizers (TrainSpec.normalization).
NORMALIZATIONS = ("standard", "quantile")


@dataclass
class ValueUnit:
    """The length unit of a raster's values: its name, metres per unit, and whether the raster's bands
    declare it or it is presumed from its CRS (the unit a compound CRS's vertical axis gives the bands
    counts as presumed, as does a projected CRS's unit)."""

    name: str
    metres: float
    declared: bool


@dataclass
class ModalitySpec:
    """One input modality: its name, band count and the per-band normalisation fitted on training pixels.

    ``mean``/``std`` are always fitted. With quantile normalisation each band also has
    ``quantile_values`` (its training pixels' quantiles, increasing) and ``quantile_scores`` (the
    standard-normal scores they map to): values in between are interpolated linearly, values beyond
    them continue with slope ``1 / std``. Empty lists mean ``(x - mean) / std``.

    ``as_declared``: bands are read as the raster declares them (GDAL metadata): values with each
    band's scale and offset applied (``stored × scale + offset``), so one quantity stored two ways
    (reflectance as integers with a scale of 0.0001, or as floats) reads alike in training and
    mapping, and an alpha band as the mask it is (data only where it is opaque), not as a
    measurement, so ``bands`` does not count it. Model files of formats 2 and 3 read every band's stored numbers (``False``).

    ``unit``: the length unit its training raster's values were in, where one can be told (heights of a
    DSM), so that mapping can warn of heights in feet for a model trained on metres; ``None`` where
    none could be, and in model files written before it was recorded.

    ``band_names``: its training raster's band descriptions, in order, where every measurement band had
    its own (``[]`` otherwise, and in earlier model files), so that mapping can tell bands in another
    order; ``ground_pixel``: that raster's own pixel size on the ground in metres (``None`` where its CRS
    gives none), so that mapping can tell a much coarser raster of the sensor.
    """

    name: str
    bands: int
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    quantile_values: list[list[float]] = field(default_factory=list)
    quantile_scores: list[list[float]] = field(default_factory=list)
    as_declared: bool = True
    unit: ValueUnit | None = None
    band_names: list[str] = field(default_factory=list)
    ground_pixel: float | None = None

    @property
    def normalization(self) -> str:
        """``quantile`` when quantile tables were fitted, else ``standard``."""
        return "quantile" if self.quantile_values or self.quantile_scores else "standard"


@dataclass
class ClassSpec:
    """One land-cover class: the value written in label and output rasters, a name and a colour."""

    value: int
    name: str
    color: str

    def has_hex_colour(self) -> bool:
        """Whether ``color`` is written ``#rrggbb``, as the output rasters' colour tables need."""
        return re.fullmatch(r"#[0-9a-fA-F]{6}", self.color) is not None


@dataclass
class BackboneSpec:
    """Which frozen backbone to build: a registry name and, optionally, a local weights file."""

    name: str = "auto"
    weights: str | None = None


@dataclass
class ExpertSpec:
    """Where expert layers go and how they are shaped.

    ``method`` names the family (``mamol``, ``moe_ada``, ``moe_task``, ``moe_rep``, ``mmp``, ``dcp``);
    ``placement`` is ``last`` or ``first`` and ``num_layers`` how many blocks receive them. For the
    MoE baselines ``num_dynamic``/``top_k`` size the routed pool; prompts have ``prompt_length`` tokens.
    """

    method: str = "mamol"
    placement: str = "last"
    num_layers: int = 6
    rank: int = 8
    alpha: float = 8.0
    num_dynamic: int = 2
    top_k: int = 1
    shared: bool = True
    modality: bool = True
    pattern_embed_dim: int = 32
    router_hidden: int = 64
    prompt_length: int = 16

    def with_rank(self, rank: int) -> ExpertSpec:
        """This spec with every LoRA expert of rank ``rank``; alpha follows it, so the LoRA scale stays 1."""
        return dataclasses.replace(self, rank=rank, alpha=float(rank))


#: How modalities meet in the backbone (LayoutSpec.encoding).
ENCODINGS = ("separate", "joint")


@dataclass
class LayoutSpec:
    """How pixels become tokens.

    A sample (and a mapping tile) is a ``patch_size`` x ``patch_size`` pixel square; each token
    covers ``token_size`` x ``token_size`` pixels of one modality, so a tile holds
    ``(patch_size / token_size)**2`` tokens per modality. ``hidden`` is the width of the tokenizer's
    per-pixel convolution (32: as accurate as 256 on the field validation split of Trento, with a
    quarter of the trainable parameters; docs/benchmarks.md). ``encoding`` is how modalities meet in the backbone: ``separate``
    (default), one sequence per present modality (the paper's eq. 4), fused at the head, or
    ``joint``, one sequence per sample holding the tokens of its present modalities, so they attend
    to each other (docs/benchmarks.md compares them). Either way an absent modality is never computed.
    """

    patch_size: int = 12
    token_size: int = 4
    hidden: int = 32
    encoding: str = "separate"

    @property
    def tokens_per_side(self) -> int:
        """Tokens along a tile's side, per modality."""
        return self.patch_size // self.token_size

    def problem(self) -> str | None:
        """Why the network cannot be built with this layout, or ``None`` when it can."""
        if self.token_size < 1 or self.patch_size < self.token_size or self.patch_size % self.token_size:
            return (f"--patch-size {self.patch_size} with --token-size {self.token_size}: the patch side must be a positive "
                    f"multiple of the token side (e.g. --patch-size {max(self.token_size, 1) * 3})")
        if self.encoding not in ENCODINGS:
            return f"encoding {self.encoding!r} is unknown; use {' or '.join(ENCODINGS)}"
        if self.hidden < 1:
            return f"hidden width {self.hidden} is not positive"
        return None

    def check(self) -> None:
        """One-line error for a layout the network cannot be built with."""
        problem = self.problem()
        if problem is not None:
            raise MamolError(problem)


@dataclass
class GridSpec:
    """The grid a model was trained on: its CRS (``EPSG:n`` or WKT; ``None`` for rasters without one)
    and pixel size (x, y) in CRS units. Mapping uses this pixel size unless told otherwise."""

    crs: str | None
    pixel_size: list[float]


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network and map with it: inputs, classes, backbone, experts,
    token layout and the training grid (``None`` in files written before it was recorded), and the
    model's name."""

    modalities: list[ModalitySpec]
    classes: list[ClassSpec]
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    experts: ExpertSpec = field(default_factory=ExpertSpec)
    layout: LayoutSpec = field(default_factory=LayoutSpec)
    grid: GridSpec | None = None
    name: str | None = None  # what the model is called (mamol-train --name); None: the model file's name

    @property
    def modality_names(self) -> list[str]:
        return [m.name for m in self.modalities]

    @property
    def total_bands(self) -> int:
        return sum(m.bands for m in self.modalities)

    @property
    def band_slices(self) -> list[slice]:
        """Where each modality's bands lie in the stacked input ``[total_bands, ...]`` (the model's band layout)."""
        ends = [sum(m.bands for m in self.modalities[: i + 1]) for i in range(len(self.modalities))]
        return [slice(end - m.bands, end) for end, m in zip(ends, self.modalities)]


@dataclass
class ProtocolSpec:
    """Missing-modality protocol (MMP): rate eta, which modality is missing (or ``both``), seed."""

    missing_rate: float = 0.7
    missing: str = "both"
    seed: int = 0


@dataclass
class TrainSpec:
    """Optimisation settings; defaults follow the paper (AdamW, lr 2e-3, wd 2e-2, 10% warm-up, batch 128).
    Weight decay applies to weight matrices only (not to norms, biases or embeddings). The parameters
    added to the frozen backbone (experts, routers, prompts) learn at ``lr * expert_lr_scale``.

    The schedule runs ``epochs`` passes over the training pixels but at least ``min_steps``
    optimizer steps, so that a small label set is not left under-trained (chosen on a validation
    split of Trento's training labels; docs/benchmarks.md). ``modality_dropout`` removes one more
    present sensor from that share of the training samples (on top of the missing-modality
    protocol), so that a sensor that is always present cannot make the others useless to the model.
    ``rotation`` ``any`` turns training patches by any angle on top of the square's symmetries.
    ``normalization`` is how band values are scaled (:data:`NORMALIZATIONS`): ``standard``,
    ``(x - mean) / std``, or ``quantile``, each band's training-pixel quantiles mapped to
    standard-normal scores, which spreads a heavy-tailed band (LiDAR intensity, SAR backscatter,
    heights dominated by a few tall objects) evenly and ignores its outliers.

    With ``validation`` > 0 about that share of the training labels (more where classes cluster),
    in whole square blocks of ``validation_block`` pixels (seeded by ``seed``), is held out: the model is scored on it
    ``validation_checks`` times over the schedule, the weights that scored best are kept, and the run
    stops after ``patience`` checks without improvement (0: it runs the whole schedule).
    """

    epochs: int = 30
    min_steps: int = 500
    batch_size: int = 128
    lr: float = 2e-3
    expert_lr_scale: float = 1.0
    weight_decay: float = 2e-2
    warmup_fraction: float = 0.1
    seed: int = 0
    modality_dropout: float = 0.0  # share of training samples with two or more sensors that lose one more, at random
    rotation: str = "square"  # augmentation: "square" (the 8 symmetries of the square) or "any" (any angle, and flips)
    normalization: str = "standard"
    validation: float = 0.0
    validation_block: int = 32
    validation_checks: int = 20
    patience: int = 0


#: Validation pixels a check scores at most (a seeded sample of them beyond that).
MAX_CHECK_PIXELS = 4096


@dataclass
class ValidationRecord:
    """What the validation split of a training run showed: its size (and its share of the training
    labels: whole blocks hold out more than asked where classes cluster; None in older files), the OA
    (%) of each check as ``[step, oa]``, the step whose weights the model file holds, and the steps
    actually run."""

    pixels: int
    checks: list[list[float]] = field(default_factory=list)
    best_step: int = 0
    best_oa: float = 0.0
    steps_run: int = 0
    stopped_early: bool = False
    share: float | None = None

    def sample_text(self) -> str:
        """Words saying that each check scored a seeded sample of the split (empty where it scored it whole)."""
        return f" (each check scores a seeded sample of {MAX_CHECK_PIXELS} of them)" if self.pixels > MAX_CHECK_PIXELS else ""


@dataclass
class LabelsRecord:
    """A training labels file as a model records it: its name, the SHA-256 of its content (a shapefile's
    attributes included) and, for vector labels, the layer and class field read and the SHA-256 of the
    features themselves (None in older files), so that an evaluation on those same labels (which scores the
    model on the pixels it learned) can be told, from a copy of them too."""

    name: str
    sha256: str
    layer: str | None = None
    field: str | None = None
    features_sha256: str | None = None

    def same_labels(self, other: "LabelsRecord") -> bool:
        """Whether ``other`` records the same labels, whatever the file (or, for features, its layer) is called."""
        if self.features_sha256 and other.features_sha256 and self.features_sha256 == other.features_sha256:
            return self.field == other.field
        return (self.sha256, self.layer, self.field) == (other.sha256, other.layer, other.field)


@dataclass
class MamolConfig:
    """The whole configuration of a trained model, embedded as JSON in its weights file, with what
    its validation split showed (``None`` when none was held out) and its training labels file
    (``None`` in files written before it was recorded)."""

    model: ModelConfig
    protocol: ProtocolSpec = field(default_factory=ProtocolSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    validation: ValidationRecord | None = None
    training_labels: LabelsRecord | None = None
    mamol_version: str = __version__
    #: The format of the file this config was read from (a new config: the newest); a file is always
    #: written in :meth:`file_format`, so this does not take part in comparisons.
    format_version: int = field(default=FORMAT_VERSION, compare=False)

    def to_json(self) -> str:
        """The config as written into a model file, with the format that file needs (:meth:`file_format`)."""
        return json.dumps(dataclasses.asdict(self) | {"format_version": self.file_format()}, indent=1)

    def file_format(self) -> int:
        """The oldest model-file format that holds this config: 4 where bands are read as declared
        (scale, offset, alpha), else 3 with quantile tables, else 2."""
        if any(m.as_declared for m in self.model.modalities):
            return 4
        return 3 if any(m.normalization == "quantile" for m in self.model.modalities) else 2

    @classmethod
    def from_json(cls, text: str, source: str = "model file") -> "MamolConfig":
        """Parse a config; refuse other format versions with a one-line error naming ``source``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MamolError(f"{source}: its embedded config is not valid JSON ({exc.msg}); retrain the model") from None
        if not isinstance(data, dict):
            raise MamolError(f"{source}: its embedded config is not an object; retrain the model")
        found = data.get("format_version")
        if found not in FORMATS_READ:
            read = ", ".join(map(str, FORMATS_READ[:-1])) + f" and {FORMATS_READ[-1]}"
            written = f"{source} was written by mamol {data.get('mamol_version', '?')} (model format {found}); this mamol {__version__} reads formats {read}"
            if isinstance(found, int) and found > FORMAT_VERSION:
                raise MamolError(f"{written}: upgrade mamol to use it")
            raise MamolError(f"{written}: retrain it on the same inputs with this mamol ({retrain_hint(data)}), "
                             f"or map with mamol {data.get('mamol_version', 'of that version')}")
        model = data.get("model") if isinstance(data.get("model"), dict) else {}
        if isinstance(model.get("layout"), dict):
            model["layout"].setdefault("encoding", "separate")  # files written before the encoding was recorded
        if found in (2, 3) and isinstance(model.get("modalities"), list):
            for modality in model["modalities"]:  # these formats read stored numbers
                if isinstance(modality, dict):
                    modality.setdefault("as_declared", False)
        try:
            config = _from_dict(cls, data)
        except (TypeError, KeyError) as exc:
            raise MamolError(f"{source}: its embedded config is incomplete or altered ({exc}); use the file mamol-train wrote, "
                             "or retrain the model") from None
        check_config(config, source)
        return config


def retrain_hint(data: dict) -> str:
    """The ``mamol-train`` command that retrains an older model file, from the settings its config records."""

    def section(parent: dict, key: str) -> dict:
        value = parent.get(key)
        return value if isinstance(value, dict) else {}

    model, protocol, train = section(data, "model"), section(data, "protocol"), section(data, "train")
    backbone, experts = section(model, "backbone"), section(model, "experts")
    if experts.get("method", "mamol") != "mamol":
        return f"a {experts['method']} model: mamol-bench run --methods {experts['method']} ..."
    modalities = model.get("modalities") if isinstance(model.get("modalities"), list) else []
    parts = ["mamol-train", *(f"--input {m.get('name')}=PATH" for m in modalities if isinstance(m, dict)), "--labels LABELS"]
    flags = (("--missing-rate", protocol, "missing_rate"), ("--missing", protocol, "missing"), ("--backbone", backbone, "name"),
             ("--backbone-weights", backbone, "weights"), ("--expert-layers", experts, "num_layers"),
             ("--placement", experts, "placement"), ("--rank", experts, "rank"), ("--dynamic-experts", experts, "num_dynamic"),
             ("--top-k", experts, "top_k"), ("--epochs", train, "epochs"), ("--min-steps", train, "min_steps"),
             ("--batch-size", train, "batch_size"), ("--lr", train, "lr"), ("--weight-decay", train, "weight_decay"),
             ("--seed", train, "seed"))
    for flag, source, key in flags:
        value = source.get(key)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(parts + ["-o NEW.safetensors"])


def _from_dict(kind: Any, value: Any, where: str = "config") -> Any:
    """Rebuild nested dataclasses (and lists of them) from plain JSON values, checking every value's
    type; a wrong one raises ``TypeError`` naming where it sits (``config.model.modalities[0].bands``)."""
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise TypeError(f"{where} is not an object")
        hints = typing.get_type_hints(kind)
        known = {f.name for f in dataclasses.fields(kind)}
        return kind(**{k: _from_dict(hints[k], v, f"{where}.{k}") for k, v in value.items() if k in known})
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise TypeError(f"{where} is not a list")
        (item,) = typing.get_args(kind)
        return [_from_dict(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    allowed = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in allowed:
        return None
    structured = [t for t in allowed if dataclasses.is_dataclass(t)]
    if structured:
        return _from_dict(structured[0], value, where)
    if float in allowed and type(value) in (int, float):
        return float(value)
    if type(value) in allowed:
        return value
    raise TypeError(f"{where} is {value!r}, not {' or '.join(t.__name__ for t in allowed)}")


def split_depth(name: str) -> tuple[str, int | None]:
    """Backbone name and depth: ``"minilm-l6@4"`` -> ``("minilm-l6", 4)``; a name without ``@`` keeps every
    block (``None``); a malformed depth is a one-line error."""
    base, sep, depth = name.rpartition("@")
    if not sep:
        return name, None
    if not re.fullmatch(r"[0-9]+", depth) or int(depth) < 1:
        raise MamolError(f"backbone {name!r}: what follows '@' is how many of its first blocks to keep, 1 or more (e.g. {base}@1)")
    return base, int(depth)


def quantile_tables_usable(spec: ModalitySpec) -> bool:
    """Whether ``spec``'s quantile tables can be interpolated: one per band, values and scores
    strictly increasing, all finite."""
    if len(spec.quantile_values) != spec.bands or len(spec.quantile_scores) != spec.bands:
        return False
    for values, scores in zip(spec.quantile_values, spec.quantile_scores):
        if not values or len(values) != len(scores) or not all(math.isfinite(v) for v in values + scores):
            return False
        if any(b <= a for a, b in zip(values, values[1:])) or any(b <= a for a, b in zip(scores, scores[1:])):
            return False
    return True


def check_config(config: MamolConfig, source: str) -> None:
    """One-line error for a config whose values no network or map can be built from (an edited file)."""
    problems = []
    for m in config.model.modalities:
        if m.bands < 1 or len(m.mean) != m.bands or len(m.std) != m.bands:
            problems.append(f"modality {m.name!r} has {m.bands} bands but {len(m.mean)} means and {len(m.std)} deviations")
        elif not all(math.isfinite(v) for v in m.mean) or not all(math.isfinite(v) and v > 0 for v in m.std):
            problems.append(f"modality {m.name!r} has a non-finite mean or a deviation that is not positive")
        elif m.normalization == "quantile" and not quantile_tables_usable(m):
            problems.append(f"modality {m.name!r} has quantile tables that are not one increasing, finite table per band")
        if m.unit is not None and not (math.isfinite(m.unit.metres) and m.unit.metres > 0):
            problems.append(f"modality {m.name!r} has a unit of {m.unit.metres!r} metres")
        if m.band_names and (len(m.band_names) != m.bands or len(set(m.band_names)) != m.bands):
            problems.append(f"modality {m.name!r} has {m.bands} bands but {len(m.band_names)} band names, or names repeated")
        if m.ground_pixel is not None and not (math.isfinite(m.ground_pixel) and m.ground_pixel > 0):
            problems.append(f"modality {m.name!r} has a ground pixel of {m.ground_pixel!r} metres")
        if m.normalization != config.train.normalization:
            problems.append(f"modality {m.name!r} is normalised by {m.normalization} scores, not the {config.train.normalization!r} "
                            "the model was trained with")
    try:
        split_depth(config.model.backbone.name)
    except MamolError as exc:
        problems.append(str(exc))
    names = [m.name for m in config.model.modalities]
    if not names or len(set(names)) != len(names):
        problems.append("its modality names are missing or repeated")
    values = [c.value for c in config.model.classes]
    if len(values) < 1 or len(set(values)) != len(values) or not all(1 <= v <= 255 for v in values):
        problems.append("its class values are missing, repeated or outside 1..255")
    if not all(c.has_hex_colour() for c in config.model.classes):
        problems.append("a class colour is not #rrggbb")
    layout = config.model.layout
    if layout.problem() is not None:
        problems.append(f"its token layout (patch {layout.patch_size}, token {layout.token_size}, encoding {layout.encoding!r}) is impossible")
    grid = config.model.grid
    if grid is not None and (len(grid.pixel_size) != 2 or not all(math.isfinite(v) and v > 0 for v in grid.pixel_size)):
        problems.append("its training grid's pixel size is not two positive numbers")
    experts = config.model.experts
    if experts.rank < 1 or experts.num_layers < 0 or experts.num_dynamic < 0 or experts.prompt_length < 0 \
            or experts.router_hidden < 1 or experts.pattern_embed_dim < 1 \
            or (experts.num_dynamic and not 1 <= experts.top_k <= experts.num_dynamic):
        problems.append("its expert sizes (rank, layers, routed experts, top-k, prompt length) are impossible")
    if problems:
        raise MamolError(f"{source}: its embedded config was altered or damaged ({'; '.join(problems)}); use the file mamol-train wrote, or retrain")
