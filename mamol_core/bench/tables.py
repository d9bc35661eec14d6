"""Markdown tables of a benchmark results CSV: mean ± sd over seeds per cell and method, per-pixel
OA as the headline, other evaluation modes beside it, an anchor (the forest) and the paper's
numbers, and a paired win count for every pair of methods. Several results files can be tabulated
together, each under a label (``d3=runs/a/results.csv``), to compare two setups run by run."""

from __future__ import annotations

import csv
import json
import logging
import re
import statistics
from collections import Counter
from itertools import permutations
from pathlib import Path
from typing import Sequence

from mamol_core.config import ExpertSpec, TrainSpec
from mamol_core.errors import MamolError

log = logging.getLogger(__name__)

#: Our method names -> the paper's names in ../shared/bench/paper_table1.csv.
PAPER_NAMES = {"mamol": "MaMOL", "moe_rep": "MoE_rep", "moe_ada": "MoE_ada", "moe_task": "MoE_task", "mmp": "MMP", "dcp": "DCP"}

#: Columns added to results.csv after its first release, with what every earlier row had ("": not recorded then).
ADDED_COLUMNS = {"tokenizer_hidden": "256", "normalization": "standard", "precision": "", "expert_lr_scale": "1", "rank": "8"}

#: Settings a results row writes as text; the table's setup line names a value only where it differs from these defaults.
DEFAULT_EXPERT_LR_SCALE = f"{TrainSpec.expert_lr_scale:g}"
DEFAULT_RANK = str(ExpertSpec.rank)

#: The evaluation mode every table leads with when the results hold it: one centred patch per pixel, as in the paper.
HEADLINE_MODE = "pixel"


def parse_mapping(text: str | None, flag: str) -> dict[str, str]:
    """``a=x,b=y`` -> ``{"a": "x", "b": "y"}``; a part without ``=`` is a one-line error naming ``flag``."""
    parts = [part.strip() for part in (text or "").split(",") if part.strip()]
    bad = next((part for part in parts if part.count("=") != 1 or not all(side.strip() for side in part.split("="))), None)
    if bad is not None:
        raise MamolError(f"{flag} {text}: {bad!r} is no pair; write OURS=THEIRS, comma-separated (e.g. both=missing_both)")
    return dict((ours.strip(), theirs.strip()) for ours, theirs in (part.split("=") for part in parts))


def reference_rows(path: Path, dataset: str | None, flag: str, fix: str) -> list[dict]:
    """The rows of ``dataset`` in the reference table ``path`` (an anchor's or the paper's); a one-line error where
    it holds none (the column would be left out without a word)."""
    rows = read_rows(path, REFERENCE_COLUMNS, REFERENCE_NUMBERS, fix)
    if not rows:
        raise MamolError(f"{path}: holds no rows; {fix}")
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    if dataset is None and len(datasets) == 1:  # a table of one dataset needs no name for it
        dataset = datasets[0]
    chosen = [row for row in rows if row["dataset"] == dataset]
    if not chosen:
        raise MamolError(f"{path}: no rows of the dataset {dataset!r}; give {flag}-dataset, one of {', '.join(datasets)}"
                         if dataset is not None else f"{path}: give {flag}-dataset, one of {', '.join(datasets)}")
    return chosen


def check_mapped(mapping: dict[str, str], reference: list[dict], flag: str, path: Path) -> None:
    """Stop where ``mapping`` (``--anchor-map``/``--paper-map``) names none of the reference table's conditions
    (its column would stay empty without a word); warn of each it names that the table lacks."""
    theirs = list(dict.fromkeys(row["condition"] for row in reference))
    unknown = [t for t in mapping.values() if t not in theirs]
    if unknown and len(unknown) == len(mapping):
        raise MamolError(f"{flag}: {path} has no condition {unknown[0]!r} in that dataset; map to one of {', '.join(theirs)}")
    for name in unknown:
        log.warning("%s: %s has no condition %r in that dataset (it has %s): its cells show no number from it", flag, path, name,
                    ", ".join(theirs))


#: What a table reads of a results CSV of mamol-bench run: the columns, and those that hold numbers.
RESULT_COLUMNS = ("scene", "missing_rate", "condition", "method", "seed", "backbone", "patch_size", "epochs", "oa", "kappa",
                  "train_s", "eval_s", "eval_mode", "device", "hardware")
RESULT_NUMBERS = ("missing_rate", "oa", "train_s", "eval_s")
#: The same for a reference table (an anchor's, or the paper's Table 1): missing rates in percent.
REFERENCE_COLUMNS = ("dataset", "missing_rate", "condition", "method", "oa", "kappa")
REFERENCE_NUMBERS = ("missing_rate", "oa", "kappa")
RESULTS_FIX = "pass the results.csv that mamol-bench run wrote"
ANCHOR_FIX = "pass an anchor CSV with the columns " + ",".join(REFERENCE_COLUMNS) + " (missing rates in percent)"
PAPER_FIX = "pass the paper's Table 1 CSV (../shared/bench/paper_table1.csv)"


def read_rows(path: Path, columns: Sequence[str] = RESULT_COLUMNS, numbers: Sequence[str] = RESULT_NUMBERS,
              fix: str = RESULTS_FIX) -> list[dict]:
    """The rows of a CSV as dictionaries; a one-line error (ending with ``fix``) for a file that is missing,
    no CSV text, lacks one of ``columns`` or holds no number where ``numbers`` need one."""
    if Path(path).is_dir():
        inside = " (" + str(Path(path) / "results.csv") + " is there)" if (Path(path) / "results.csv").is_file() else ""
        raise MamolError(f"{path}: is a folder; give the file{inside}; {fix}")
    if not Path(path).is_file():
        raise MamolError(f"{path}: no such file; {fix}")
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            lacking = [c for c in columns if c not in (reader.fieldnames or [])]
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MamolError(f"{path}: not a CSV text file ({type(exc).__name__}); {fix}") from None
    if lacking:
        raise MamolError(f"{path}: has no column {', '.join(lacking)}; {fix}")
    for line, row in enumerate(rows, start=2):
        for column in numbers:
            if row[column] is None:
                raise MamolError(f"{path}: line {line}: the row ends before its {column} column (cut short); mend or remove that row")
            try:
                float(row[column])
            except (TypeError, ValueError):
                raise MamolError(f"{path}: line {line}: {column} is {row[column]!r}, not a number; mend or remove that row") from None
    return rows


#: A label of a results file (``LABEL=path``): letters, digits, '.', '_' or '-'.
LABEL = re.compile(r"[A-Za-z0-9._-]+")


def parse_spec(spec: str | Path) -> tuple[str, Path]:
    """``(label, path)`` of a results file given as ``PATH`` or ``LABEL=PATH``; a ``Path``, an existing
    file or a part before ``=`` that is no label (``runs/lr=0.2/results.csv``) is a plain path."""
    if isinstance(spec, Path) or "=" not in spec or Path(spec).is_file():
        return "", Path(spec)
    label, _, path = spec.partition("=")
    if not LABEL.fullmatch(label):
        return "", Path(spec)
    if not path:
        raise MamolError(f"{spec}: give a results file after the label (LABEL=path/to/results.csv)")
    return label, Path(path)


def run_key(row: dict) -> tuple:
    """What makes a result row one run: ``(method, scene, missing rate, condition, seed)``."""
    return row["method"], row.get("scene"), row["missing_rate"], row["condition"], row["seed"]


def read_labelled(specs: Sequence[str | Path]) -> list[dict]:
    """The rows of one or more results CSVs, each given as ``PATH`` or ``LABEL=PATH``. A labelled file's
    methods are renamed ``LABEL:method`` (and its rows carry ``label``), so that the same method run in
    two setups gets two columns and paired comparisons. A run (scene, missing rate, condition, method,
    seed) found twice is refused."""
    rows, sources = [], {}
    for spec in specs:
        label, path = parse_spec(spec)
        if not path.is_file() and not path.is_dir():
            raise MamolError(f"{spec}: no such results file; pass the results.csv that mamol-bench run wrote, "
                             "or LABEL=results.csv with a label of letters, digits, '.', '_' or '-'")
        for row in read_rows(path):
            row = {**row, "method": f"{label}:{row['method']}", "label": label} if label else row
            run = run_key(row)
            if run in sources:
                fix = ("it was written twice; keep one of its rows" if sources[run] == spec else
                       f"so does {sources[run]}; give the files different labels (LABEL=path/to/results.csv)")
                raise MamolError(f"{spec}: holds {row['method']}'s run at {run[2]} / {run[3]} / seed {run[4]} twice: {fix}")
            sources[run] = spec
            rows.append(row)
    return rows


def mean_kappa(rows: list[dict]) -> str:
    """The mean kappa of result rows, or ``undefined`` if any row's kappa is."""
    values = [r["kappa"] for r in rows]
    return "undefined" if "undefined" in values else f"{statistics.mean(map(float, values)):.2f}"


def scores_by_mode(row: dict) -> dict[str, float]:
    """OA of a result row per evaluation mode (its first mode from the ``oa`` column if nothing else is recorded)."""
    scores = {k: float(v) for k, v in json.loads(row.get("oa_by_mode") or "{}").items()}
    scores.setdefault(row["eval_mode"], float(row["oa"]))
    return scores


def headline_mode(rows: list[dict]) -> str:
    """``pixel`` where every row has it, else the first mode shared by all rows (older results)."""
    shared = set.intersection(*(set(scores_by_mode(r)) for r in rows))
    if HEADLINE_MODE in shared:
        return HEADLINE_MODE
    return next((r["eval_mode"] for r in rows if r["eval_mode"] in shared), sorted(shared)[0] if shared else rows[0]["eval_mode"])


def paired_wins(rows: list[dict], methods: list[str], mode: str) -> str:
    """A matrix: row method A, column method B, ``wins/pairs (mean A − B ± its standard error)`` over the
    runs the two share (same scene, missing rate, condition and seed)."""
    runs = {run_key(r): scores_by_mode(r)[mode] for r in rows}
    lines = ["| A \\ B | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 1)]
    cells = {m: {} for m in methods}
    for a, b in permutations(methods, 2):
        shared = [key[1:] for key in runs if key[0] == a and (b, *key[1:]) in runs]
        if shared:
            differences = [runs[(a, *k)] - runs[(b, *k)] for k in shared]
            error = f" ± {statistics.stdev(differences) / len(differences) ** 0.5:.2f}" if len(differences) > 1 else ""
            cells[a][b] = f"{sum(d > 0 for d in differences)}/{len(differences)} ({statistics.mean(differences):+.2f}{error})"
    for a in methods:
        lines.append(f"| {a} | " + " | ".join("—" if a == b else cells[a].get(b, "") for b in methods) + " |")
    return "\n".join(lines)


def mode_table(rows: list[dict], methods: list[str], cells: list[tuple], mode: str) -> str:
    """Mean OA (± sd over seeds) per cell and method in one evaluation ``mode``."""
    lines = ["| missing rate | condition | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 2)]
    for rate, condition in cells:
        line = [f"{float(rate):.0%}", condition]
        for method in methods:
            oas = [scores_by_mode(r)[mode] for r in rows if (r["missing_rate"], r["condition"], r["method"]) == (rate, condition, method)]
            line.append(f"{statistics.mean(oas):.2f}" + (f" ± {statistics.stdev(oas):.2f}" if len(oas) > 1 else "") if oas else "")
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def markdown_table(results: str | Path | Sequence[str | Path], anchor: Path | None = None, anchor_dataset: str | None = None, anchor_map: str | None = None,
                   paper: Path | None = None, paper_dataset: str | None = None, paper_map: str | None = None,
                   methods: list[str] | None = None) -> str:
    """One row per missing rate x condition, by increasing rate: each method's OA / kappa in the headline
    mode (per-pixel where recorded; mean over seeds, with the OA's sample standard deviation and the seed
    count where there are several, and the paper's number in brackets where given), the best method, the
    anchor's; then training and evaluation time (mean over the cell's runs of every method; each method's
    own below). Kappa is shown where the rows recorded it for the headline mode. ``methods`` picks and orders the columns (default: every method in the results). Below: the cells
    each method wins, each method's mean OA over the cells every method finished (and the anchor's), the
    cells where each method's mean is above the anchor's, a paired win count for
    every pair of methods, and the same grid in every other evaluation mode all rows recorded. ``results``
    is one CSV or a list of ``PATH`` / ``LABEL=PATH`` (see :func:`read_labelled`)."""
    specs = [results] if isinstance(results, (str, Path)) else list(results)
    rows = read_labelled(specs)
    if not rows:
        raise MamolError(f"{', '.join(map(str, specs))}: no run recorded yet; {RESULTS_FIX}, once a run has finished")
    offered = list(dict.fromkeys(r["method"] for r in rows))
    methods = methods or offered
    absent = next((m for m in methods if m not in offered), None)
    if absent is not None:
        raise MamolError(f"--methods {absent}: {', '.join(map(str, specs))} {'holds' if len(specs) == 1 else 'hold'} no run of it; "
                         f"choose --methods among {', '.join(offered)}")
    rows = [r for r in rows if r["method"] in methods]
    mode = headline_mode(rows)
    cells = sorted(dict.fromkeys((r["missing_rate"], r["condition"]) for r in rows), key=lambda cell: float(cell[0]))
    to_anchor, to_paper = parse_mapping(anchor_map, "--anchor-map"), parse_mapping(paper_map, "--paper-map")
    anchor_rows = reference_rows(anchor, anchor_dataset, "--anchor", ANCHOR_FIX) if anchor else []
    paper_rows = reference_rows(paper, paper_dataset, "--paper", PAPER_FIX) if paper else []
    if anchor:
        check_mapped(to_anchor, anchor_rows, "--anchor-map", anchor)
    if paper:
        check_mapped(to_paper, paper_rows, "--paper-map", paper)
    anchors = {(f"{float(a['missing_rate']) / 100:g}", a["condition"]): a for a in anchor_rows}
    papers = {(f"{float(p['missing_rate']) / 100:g}", p["condition"], p["method"]): p for p in paper_rows}
    header = ["missing rate", "condition", *[f"{m} OA / κ" for m in methods], "best"]
    if anchors:
        header += ["anchor OA / κ", "best − anchor (OA)"]
    header += ["train s / cell", "eval s / cell"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    wins, totals, lacking = Counter(), Counter(), Counter()
    above, with_anchor = Counter(), Counter()
    finished_anchors: list[float] = []  # the anchor's OA in each cell every method finished
    for rate, condition in cells:
        chosen = [r for r in rows if (r["missing_rate"], r["condition"]) == (rate, condition)]
        line = [f"{float(rate):.0%}", condition]
        scores = {}
        for method in methods:
            runs = [r for r in chosen if r["method"] == method]
            if not runs:
                line.append("")
                continue
            oas = [scores_by_mode(r)[mode] for r in runs]
            oa = statistics.mean(oas)
            kappa = mean_kappa(runs) if all(r["eval_mode"] == mode for r in runs) else "n/a"
            scores[method] = oa
            published = papers.get((rate, to_paper.get(condition, condition), PAPER_NAMES.get(method.split(":")[-1], "")))
            spread, count = (f" ± {statistics.stdev(oas):.2f}", f" (n={len(runs)})") if len(runs) > 1 else ("", "")
            line.append(f"{oa:.2f}{spread} / {kappa}{count}"
                        + (f" [paper {float(published['oa']):.2f} / {float(published['kappa']):.2f}]" if published else ""))
        best = max(scores.values(), default=None)
        seeds = [{r["seed"] for r in chosen if r["method"] == method} for method in methods]
        complete = all(seeds) and all(s == seeds[0] for s in seeds)  # every method, on the same seeds
        lacking.update(m for m, s in zip(methods, seeds) if s != set().union(*seeds))
        line.append(max(scores, key=scores.get) if complete else "")
        if complete:
            wins[line[-1]] += 1
            totals.update(scores)
        if anchors:
            a = anchors.get((rate, to_anchor.get(condition, condition)))
            anchor_oa = float(a["oa"]) if a else 0.0
            line += [f"{anchor_oa:.2f} / {float(a['kappa']):.2f}", f"{best - anchor_oa:+.2f}"] if a and best is not None else ["", ""]
            if a:
                with_anchor.update(list(scores))
                above.update(m for m, oa in scores.items() if oa > anchor_oa)
                if complete:
                    finished_anchors.append(anchor_oa)
        line += [f"{statistics.mean(float(r[key]) for r in chosen):.0f}" for key in ("train_s", "eval_s")]
        lines.append("| " + " | ".join(line) + " |")
    runs = Counter(f"{r['label'] + ': ' if r.get('label') else ''}{r['device']} ({r['hardware']}), {r.get('precision') or 'precision not recorded'}" for r in rows)
    devices = [f"{device}: {count} run{'s' if count > 1 else ''}" for device, count in sorted(runs.items())]
    setups = sorted({f"{r['label'] + ': ' if r.get('label') else ''}{r['backbone']}, patch {r['patch_size']}, tokens of {r.get('token_size') or 1} px"
                     f"{', tokenizer width ' + r['tokenizer_hidden'] if r.get('tokenizer_hidden') else ''}"
                     f"{', ' + r['encoding'] + ' encoding' if r.get('encoding') else ''}"
                     f"{', ' + r['normalization'] + ' normalisation' if r.get('normalization', ADDED_COLUMNS['normalization']) != TrainSpec.normalization else ''}"
                     f"{', experts at ' + r['expert_lr_scale'] + ' x lr' if r.get('expert_lr_scale', ADDED_COLUMNS['expert_lr_scale']) != DEFAULT_EXPERT_LR_SCALE else ''}"
                     f"{', LoRA rank ' + r['rank'] if r.get('rank', ADDED_COLUMNS['rank']) != DEFAULT_RANK else ''}, {r['epochs']} epochs"
                     f"{' (' + r['steps'] + ' steps)' if r.get('steps') else ''}, on the {r.get('split') or 'test'} split" for r in rows})
    finished_cells = sum(wins.values())
    tally = ", ".join(f"{m} {wins[m]}" for m in methods)
    if lacking:
        short = [m for m in methods if lacking[m]]
        leave = f", or leave {'it' if len(short) == 1 else 'them'} out with --methods" if len(short) < len(methods) else ""
        tally += (f" ({'; '.join(f'{m} lacks seeds the others have in {lacking[m]} of the {len(cells)} cells' for m in short)}: "
                  f"finish those runs{leave})")
    means = ", ".join(f"{m} {totals[m] / finished_cells:.2f}" for m in methods) if finished_cells else "none"
    if len(finished_anchors) == finished_cells > 0:
        means += f"; anchor {statistics.mean(finished_anchors):.2f}"
    seconds = ", ".join(f"{m} {statistics.mean(float(r['train_s']) for r in runs):.0f} / {statistics.mean(float(r['eval_s']) for r in runs):.0f}"
                        for m in methods if (runs := [r for r in rows if r["method"] == m]))
    above_anchor = (f"Cells where the mean OA is above the anchor's: {', '.join(f'{m} {above[m]}/{with_anchor[m]}' for m in methods)}.\n"
                    if with_anchor else "")
    text = ("\n".join(lines) + f"\n\nHeadline: `{mode}` evaluation"
            f"{'' if mode == HEADLINE_MODE else ' (these results hold no per-pixel scores for every run)'}.\n"
            f"Best OA in the {finished_cells} cells that every method finished (same seeds): {tally}.\n"
            f"Mean OA over those cells: {means}.\n{above_anchor}"
            f"Seconds per run, training / evaluation (each method's mean over its runs; the table's columns average every method): {seconds}.\n"
            f"Device: {'; '.join(devices)}. Setup: {'; '.join(setups)}.\n")
    if len(methods) > 1:
        text += (f"\nPaired wins (`{mode}`; same cell and seed): A beats B in wins/pairs runs, mean A − B in brackets "
                 "with its standard error over the pairs.\n\n")
        text += paired_wins(rows, methods, mode) + "\n"
    others = set.intersection(*(set(scores_by_mode(r)) for r in rows)) - {mode}
    for other in sorted(others):
        text += f"\nThe same runs scored with `{other}` evaluation (mean OA ± sd over seeds):\n\n" + mode_table(rows, methods, cells, other) + "\n"
    return text
