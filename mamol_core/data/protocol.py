"""The missing-modality protocol of MMP (Lee et al. 2023), used by the paper and generalised to M modalities.

A fixed share ``rate`` of the samples is incomplete. ``missing=NAME`` (or ``NAME,NAME``): all of
them lack those modalities. ``missing=both`` (alias ``all``): they are spread evenly over the M
single-modality absences (each ``rate/M``; for two modalities the paper's eta/2 each, and for three
the 75%/75%/75% availability of Table 3), so no sample misses everything. ``missing=subsets``:
spread evenly over all ``2^M - 2`` patterns with at least one modality present and one missing.
``missing=sar:1+dsm:2``: single-modality absences in the given proportions (Table 3's uneven rows,
e.g. eta = 75% as SAR missing on 25% and DSM on 50% of the samples).
The assignment is a seeded permutation, one pattern per sample, the same rule in training and testing.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from mamol_core.errors import MamolError


def weighted_patterns(names: list[str], missing: str) -> tuple[list[np.ndarray], list[float]]:
    """Presence patterns (bool ``[M]``) the incomplete samples are spread over, with their weights."""
    if ":" not in missing:
        patterns = missing_patterns(names, missing)
        return patterns, [1.0] * len(patterns)
    patterns, weights = [], []
    for part in missing.split("+"):
        name, _, weight = part.partition(":")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if name not in names or not (math.isfinite(value) and value > 0):  # nan and inf are no weights
            raise MamolError(f"--missing {missing!r}: write NAME:WEIGHT+NAME:WEIGHT with modalities among {', '.join(names)} and positive weights")
        patterns.append(np.arange(len(names)) != names.index(name))
        weights.append(value)
    return patterns, weights


def check_missing_names(names: list[str], missing: str) -> None:
    """Stop where ``missing`` (``--missing``) names a sensor that is not one of ``names``: checked even where the protocol
    does not apply (one sensor), since a misspelt name says the command is not what was meant."""
    if missing in ("both", "all", "subsets"):
        return
    weighted = ":" in missing  # NAME:WEIGHT+NAME:WEIGHT, else NAME,NAME
    named = [part.partition(":")[0].strip() for part in missing.split("+")] if weighted else [w.strip() for w in missing.split(",")]
    unknown = [name for name in named if name and name not in names]
    if unknown:
        raise MamolError(f"--missing {missing!r}: {', '.join(repr(n) for n in unknown)} is not one of the modalities; use both, "
                         f"subsets, or names among {', '.join(names)}{'' if weighted else ' (comma-separated)'}")


def missing_patterns(names: list[str], missing: str) -> list[np.ndarray]:
    """Presence patterns (bool ``[M]``) that the incomplete samples are spread over evenly."""
    count = len(names)
    if missing in ("both", "all"):
        if count < 2:
            raise MamolError(f"--missing {missing} needs at least two modalities; the model has {', '.join(names)} only")
        return [np.arange(count) != i for i in range(count)]
    if missing == "subsets":
        if count < 2:
            raise MamolError(f"--missing subsets needs at least two modalities; the model has {', '.join(names)} only")
        patterns = [np.array(bits, bool) for bits in itertools.product([False, True], repeat=count)]
        return [p for p in patterns if 0 < p.sum() < count]
    check_missing_names(names, missing)
    wanted = [w.strip() for w in missing.split(",") if w.strip()]
    if not wanted:
        raise MamolError(f"--missing {missing!r}: {missing!r} is not one of the modalities; use both, subsets, or names among "
                         f"{', '.join(names)} (comma-separated)")
    pattern = np.array([n not in wanted for n in names])
    if not pattern.any():
        raise MamolError(f"--missing {missing!r} would remove every modality; leave at least one present")
    return [pattern]


def assign_presence(count: int, names: list[str], rate: float, missing: str, seed: int) -> np.ndarray:
    """Presence masks ``[count, M]`` for ``count`` samples: ``round(rate * count)`` of them incomplete
    (none with one modality, which a sample cannot miss and still be classified)."""
    if not 0.0 <= rate <= 1.0:
        raise MamolError(f"--missing-rate {rate}: give a fraction between 0 and 1 (0.7 for 70%)")
    presence = np.ones((count, len(names)), bool)
    if rate == 0 or len(names) == 1:
        return presence
    patterns, weights = weighted_patterns(names, missing)
    order = np.random.default_rng(seed).permutation(count)
    incomplete = order[: int(round(rate * count))]
    if len(set(weights)) == 1:
        chunks = np.array_split(incomplete, len(patterns))
    else:
        bounds = np.rint(np.cumsum(weights) / sum(weights) * len(incomplete)).astype(int)
        chunks = np.split(incomplete, bounds[:-1])
    for pattern, chunk in zip(patterns, chunks):
        presence[chunk] = pattern
    return presence


def pattern_name(presence: np.ndarray, names: list[str]) -> str:
    """Readable name of one presence pattern: ``complete`` or ``missing NAME[+NAME]``."""
    absent = [n for n, p in zip(names, presence) if not p]
    return "complete" if not absent else "missing " + "+".join(absent)


def describe_protocol(names: list[str], rate: float, missing: str) -> str:
    """What the protocol does to the samples of these modalities, in one sentence."""
    if len(names) == 1:
        return f"one modality ({names[0]}): every sample is complete; the missing-modality protocol needs two or more"
    if rate == 0:
        return f"every sample has all of {', '.join(names)} (missing rate 0)"
    patterns, weights = weighted_patterns(names, missing)
    shares = [rate * w / sum(weights) for w in weights]
    parts = [f"{share:.0%} lack {' and '.join(n for n, here in zip(names, p) if not here)}" for p, share in zip(patterns, shares)]
    return f"{rate:.0%} of the samples miss a modality ({'; '.join(parts)}), {1 - rate:.0%} have all of {', '.join(names)}"


def untrained_note(names: list[str], rate: float, missing: str) -> str | None:
    """A warning where the protocol trains for only some of the sensor combinations a map may have (with
    three sensors ``both`` trains for one missing at a time, so a map from one sensor alone was never
    trained for; with two, ``--missing lidar`` never trains for lidar alone); ``None`` where it trains for
    all, or for none on purpose (missing rate 0), or there is one sensor."""
    if len(names) < 2 or rate == 0:
        return None
    trained = {tuple(p) for p in weighted_patterns(names, missing)[0]} | ({(True,) * len(names)} if rate < 1 else set())
    combinations = [bits for bits in itertools.product([False, True], repeat=len(names)) if any(bits)]
    untrained = [bits for bits in combinations if bits not in trained]
    if not untrained:
        return None
    fewest = min(untrained, key=sum)
    example = ("all of them" if all(fewest) else
               " and ".join(n for n, here in zip(names, fewest) if here) + (" alone" if sum(fewest) == 1 else ""))
    which = (f"maps from {example} use a combination" if len(untrained) == 1 else
             f"maps from the other {len(untrained)} ({example}, say) use combinations")
    fixes = (["set --missing-rate below 1"] if rate >= 1 else []) + (["set --missing to subsets"] if not all(fewest) else [])
    return (f"with {len(names)} sensors, --missing {missing} at rate {rate:g} trains for {len(combinations) - len(untrained)} of their "
            f"{len(combinations)} combinations: {which} the model never saw; {' and '.join(fixes)} to train for every combination")
