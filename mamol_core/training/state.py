"""A training state file: everything needed to continue a run exactly where it stopped.

One safetensors file (no pickle), written atomically: the trainable weights, AdamW's moments and
step counts, the random generators' states and the current epoch's sample order as tensors; the
run's configuration, the loop position, the loss history and the optimizer's and scheduler's
settings as JSON metadata. A resumed run continues with the same random draws, so on a CPU it
ends with the same weights as a run that was never interrupted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mamol_core.atomic import atomic_path
from mamol_core.config import MamolConfig
from mamol_core.errors import MamolError
from mamol_core.modelfile.header import read_metadata

#: Metadata key of the state file's JSON.
STATE_KEY = "mamol_training_state"
#: How to start afresh over a state that cannot be resumed (mamol-train refuses a fresh run over an existing state).
AFRESH = "start afresh with --continue instead of --resume (it replaces the state at --state) or delete this file"
#: What the JSON must hold for a run to continue from it.
STATE_FIELDS = {"config", "labels", "step", "epoch", "epoch_start", "total", "seen", "history", "param_groups", "scheduler"}
#: Config fields that do not change how a run trains: a state written by another mamol release continues.
NOT_COMPARED = {"mamol_version"}


@dataclass(frozen=True)
class RunIdentity:
    """Whose state it is: the run's configuration (JSON), the digest of its training labels
    (:meth:`PreparedScene.training_labels_digest`) and what it computes on (``cpu, float32``)."""

    config_json: str
    labels: str
    compute: str


@dataclass
class LoopPosition:
    """Where the training loop is: steps done, epochs done, the step the current epoch began at, the
    current epoch's sample order (``None`` between epochs), its running loss sum and sample count,
    the mean loss of each finished epoch, and the training time (wall and CPU seconds) spent up to
    this position by every process that ran it."""

    step: int = 0
    epoch: int = 0
    epoch_start: int = 0
    order: torch.Tensor | None = None
    total: float = 0.0
    seen: int = 0
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def save_state(path: Path, identity: RunIdentity, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler, generator: torch.Generator, position: LoopPosition,
               validation: tuple[dict[str, torch.Tensor], dict] | None = None) -> None:
    """Write the state of a run at a step boundary to ``path`` atomically, with whose it is and the
    validation tracker's tensors and metadata (:meth:`ValidationTracker.state`) when it has one."""
    tensors = {f"model.{name}": p.detach().to("cpu").contiguous() for name, p in model.named_parameters() if p.requires_grad}
    optim = optimizer.state_dict()
    for index, values in optim["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().to("cpu").contiguous()
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    if position.order is not None:
        tensors["loop.order"] = position.order.to("cpu").contiguous()
    meta = {"config": json.loads(identity.config_json), "labels": identity.labels, "compute": identity.compute,
            "step": position.step, "epoch": position.epoch, "epoch_start": position.epoch_start, "total": position.total,
            "seen": position.seen, "history": position.history, "seconds": position.seconds, "cpu_seconds": position.cpu_seconds,
            "param_groups": optim["param_groups"], "scheduler": scheduler.state_dict()}
    if validation is not None:
        tensors.update(validation[0])
        meta["validation"] = validation[1]
    with atomic_path(Path(path)) as temporary:
        save_file(tensors, str(temporary), metadata={STATE_KEY: json.dumps(meta), "format": "mamol-training-state"})


@dataclass
class SavedState:
    """A state file as read: its JSON metadata and tensors."""

    path: Path
    meta: dict
    tensors: dict[str, torch.Tensor]

    def differences(self, identity: RunIdentity) -> list[str]:
        """What differs between this state's run and the run ``identity``: ``the training labels`` first,
        then settings, with both values where they are short (``train.lr 0.001 then, 0.01 now``). A setting
        added to mamol after the state was written counts as its default there (the run behaved so); one
        this mamol does not know counts as a difference. Where they compute is not compared (see :attr:`compute`)."""
        differing = _differences(_compared(_with_defaults(self.meta["config"])), _compared(json.loads(identity.config_json)))
        return ([TRAINING_LABELS] if self.meta["labels"] != identity.labels else []) + [
            _described(key, *differing[key]) for key in sorted(set(differing) - NOT_COMPARED)]

    @property
    def compute(self) -> str:
        """What the run computed on (``cuda, bfloat16``), or ``unrecorded``."""
        return self.meta.get("compute", "unrecorded")

    def check_config(self, identity: RunIdentity) -> None:
        """Stop unless the state was written by a run of exactly this configuration and these labels."""
        differing = self.differences(identity)
        written, now = self.meta["config"].get("format_version"), json.loads(identity.config_json).get("format_version")
        if differing and written != now:
            raise MamolError(f"{self.path}: was written by mamol {self.meta['config'].get('mamol_version', '?')}, which read the "
                             f"rasters' bands otherwise (model format {written}, now {now}); {AFRESH}")
        if differing:
            raise MamolError(f"{self.path}: was written by a run with other settings or inputs ({differences_text(differing)}); "
                             f"resume with the arguments of that run, or {AFRESH}")

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, generator: torch.Generator,
                device: torch.device) -> LoopPosition:
        """Put the saved weights, optimizer, scheduler and generators back; returns the loop position.
        A state whose tensors do not fit the model (another mamol release's layers) is refused in one line."""
        try:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if p.requires_grad:
                        p.copy_(self.tensors[f"model.{name}"].to(device))
            state = {}
            for key, value in self.tensors.items():
                if key.startswith("optim."):
                    _, index, name = key.split(".", 2)
                    state.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
            optimizer.load_state_dict({"state": state, "param_groups": self.meta["param_groups"]})
            scheduler.load_state_dict(self.meta["scheduler"])
            generator.set_state(self.tensors["rng.generator"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise MamolError(f"{self.path}: its weights do not fit this model ({' '.join(str(exc).split())[:80]}); "
                             "delete it to start afresh") from None
        torch.set_rng_state(self.tensors["rng.torch"])
        if "rng.cuda" in self.tensors and device.type == "cuda":
            torch.cuda.set_rng_state(self.tensors["rng.cuda"])
        order = self.tensors.get("loop.order")
        m = self.meta
        return LoopPosition(m["step"], m["epoch"], m["epoch_start"], None if order is None else order.to(device), m["total"],
                            m["seen"], list(m["history"]), m.get("seconds", 0.0), m.get("cpu_seconds", 0.0))


def is_training_state(path: Path) -> bool:
    """True when ``path`` is a file a mamol training run wrote as its state (whatever its settings,
    complete or cut short by a failed copy); False for any other file, or one that cannot be read."""
    try:
        return STATE_KEY in read_metadata(path, check_size=False)
    except (MamolError, OSError):
        return False


def check_state_file(path: Path) -> None:
    """One-line error when ``path`` (given to continue a run from) is no file."""
    if not Path(path).is_file():
        raise MamolError(f"{path}: no such training state file; pass the file an interrupted mamol-train wrote (see its last message)")


def read_state(path: Path) -> SavedState:
    """Read a training state file; one-line errors for a missing, damaged or foreign file."""
    path = Path(path)
    check_state_file(path)
    if not is_training_state(path):
        raise MamolError(f"{path}: not a training state; pass the .state.safetensors file an interrupted mamol-train wrote (see its "
                         "last message), or start afresh without --resume")
    try:
        meta = json.loads(read_metadata(path)[STATE_KEY])
        if not (isinstance(meta, dict) and STATE_FIELDS <= set(meta) and isinstance(meta["config"], dict)):
            raise ValueError("incomplete")
        tensors = load_file(str(path))
    except (MamolError, SafetensorError, KeyError, ValueError, OSError):
        raise MamolError(f"{path}: not a complete training state of this mamol; {AFRESH}") from None
    return SavedState(path, meta, tensors)


#: Settings an earlier mamol stored in its states and this one no longer has, with the one value this mamol
#: still behaves as (``TrainSpec.augment`` and ``.dense_supervision``, never switched off by any command).
RETIRED_SETTINGS = {("train", "augment"): True, ("train", "dense_supervision"): True}


def _with_defaults(config: dict) -> dict:
    """``config`` with the settings this mamol has and it lacks at their defaults; its own values, and
    keys this mamol does not know, are kept, except a retired setting at the value this mamol behaves as
    (:data:`RETIRED_SETTINGS`). Unchanged if this mamol cannot read it."""
    try:
        defaults = json.loads(MamolConfig.from_json(json.dumps(config), "training state").to_json())
    except MamolError:
        return config
    merged = _merged(defaults, config)
    for (section, key), value in RETIRED_SETTINGS.items():
        if isinstance(merged.get(section), dict) and merged[section].get(key, value) == value:
            merged[section] = {k: v for k, v in merged[section].items() if k != key}
    return merged


#: The fields of a modality that say what its training raster was like, for mapping's warnings only.
RECORDED_FOR_MAPPING = ("unit", "band_names", "ground_pixel")


def _compared(config: dict) -> dict:
    """``config`` without what does not change how a run trains: what the modalities' training rasters were like,
    recorded for the warnings of mapping (:data:`RECORDED_FOR_MAPPING`; unrecorded in the states of an earlier mamol)."""
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("modalities"), list):
        return config
    modalities = [{k: v for k, v in m.items() if k not in RECORDED_FOR_MAPPING} if isinstance(m, dict) else m
                  for m in model["modalities"]]
    return {**config, "model": {**model, "modalities": modalities}}


def _merged(defaults, stored):
    if isinstance(defaults, dict) and isinstance(stored, dict):
        return {**defaults, **{k: _merged(defaults.get(k), v) for k, v in stored.items()}}
    if isinstance(defaults, list) and isinstance(stored, list) and len(defaults) == len(stored):
        return [_merged(d, s) for d, s in zip(defaults, stored)]
    return stored


def differences_text(differing: list[str]) -> str:
    """``differing`` (from :meth:`SavedState.differences`) in words: the first four and a count of the rest."""
    more = f"; {len(differing) - 4} more" if len(differing) > 4 else ""
    return f"differing: {'; '.join(differing[:4])}{more}"


#: A difference in the training pixels or their sensor masks, and what makes one.
TRAINING_LABELS = ("the training labels or their sensor masks (the labels' file, those --holdout, --no-eval or --validation keep "
                   "out, or the missing-sensor protocol and its --seed)")
#: What sets the configuration keys (by prefix) whose names do not say it.
SET_BY = {"model.name": "--name, else -o's file name", "model.modalities": "the sensors, their bands, or their statistics on the "
          "training pixels", "model.classes": "the class table or label names",
          "model.grid": "the inputs' grid or --reference"}


def _described(key: str, then, now) -> str:
    """``key`` (``train.lr``) with its values ``then`` and ``now`` where both are short single values, and
    what sets it where its name does not say (:data:`SET_BY`)."""
    by = next((f" ({words})" for prefix, words in SET_BY.items() if key == prefix or key.startswith(f"{prefix}.")), "")
    if all(isinstance(v, (int, float, str, bool)) and len(json.dumps(v)) <= 24 for v in (then, now)):
        return f"{key}{by} {json.dumps(then)} then, {json.dumps(now)} now"
    return f"{key}{by}"


def _differences(a, b, prefix: str = "") -> dict[str, tuple]:
    """The dotted keys (``train.lr``) whose values differ between configurations ``a`` and ``b``, each with
    both values (``config`` where the whole differs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {d: values for k in set(a) | set(b) for d, values in _differences(a.get(k), b.get(k), f"{prefix}{k}.").items()}
    return {} if a == b else {prefix.rstrip(".") or "config": (a, b)}
