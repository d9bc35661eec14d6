"""One validation of input rasters against a model, for evaluation and mapping alike: known
modality names, one file per modality, the model's band counts (alpha bands, masks, not counted
where the model reads bands as declared), and (where asked, as routing plots ask) every modality present."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from mamol_core.config import ModelConfig
from mamol_core.data.rasters import measurement_bands, open_raster, stack_hint
from mamol_core.errors import MamolError


def check_sources(model: ModelConfig, sources: dict[str, Path], complete: bool, where: str = "the inputs") -> None:
    """Stop on the first problem with one line naming the file and the fix: no raster at all, a
    modality the model does not know, one file for two modalities, a band count that differs from the model's, or (``complete``)
    a modality of the model that ``where`` lacks."""
    known = model.modality_names
    if not sources:
        raise MamolError(f"no input raster given; the model expects {', '.join(known)} (e.g. --input {known[0]}=PATH)")
    unknown, free = [n for n in sources if n not in known], [n for n in known if n not in sources]
    if unknown:
        path = sources[unknown[0]]  # where one file and one modality are left over, it is likely that one (dsm.tif for lidar)
        if len(unknown) == len(free) == 1:
            use = f"if it is its {free[0]} raster, --input {free[0]}={shlex.quote(str(path))}"
        elif free:
            use = f"give it under the name of the sensor it holds: --input NAME={shlex.quote(str(path))}, NAME one of {', '.join(free)}"
        else:
            use = "leave it out: every modality of the model is given"
        raise MamolError(f"{path}: the model knows no modality {unknown[0]!r}; it expects {', '.join(known)} ({use})")
    check_one_file_each(sources)
    specs = {m.name: m for m in model.modalities}
    for name, path in sources.items():
        with open_raster(path) as src:
            bands = len(measurement_bands(src, path)) if specs[name].as_declared else src.count
            alpha = " and an alpha band" if bands < src.count else ""
        if bands != specs[name].bands:
            separate = f" (its bands as separate files: stack them first, {stack_hint(name)})" if bands < specs[name].bands else ""
            raise MamolError(f"{path}: {bands} band{'' if bands == 1 else 's'}{alpha}, but the model's {name} has {specs[name].bands}; "
                             f"pass the {name} raster the model was trained on{separate}")
    missing = [name for name in known if name not in sources]
    if complete and missing:
        raise MamolError(f"{where}: has no modality {missing[0]!r} that the model expects; add {missing[0]}.tif or --input {missing[0]}=PATH")


def check_one_file_each(sources: dict[str, Path]) -> None:
    """Stop when one file is given for two modalities (a sensor would stand in for another)."""
    seen: dict[str, str] = {}
    for name, path in sources.items():
        key = os.path.realpath(path)
        if key in seen:
            raise MamolError(f"{path}: given for both {seen[key]} and {name}; pass each sensor's own raster")
        seen[key] = name
