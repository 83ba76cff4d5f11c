"""A small study of fine-tuning settings, chosen on validation only (issue 15).

For each setting and seed, ``pipeline.finetune.finetune`` from one head run (the ELPV
default's best fine-tunable run, or a generated dataset's), recording validation and test
metrics, the kept epoch and the wall time, one JSON line per run appended to ``--out`` (a
partial study keeps what finished). Settings use exact augmentation so epochs run on cached
activations of the frozen bottom (computed once per cut and views, shared by every run).
``--budget-minutes`` stops starting new runs once spent. The table: per setting, mean and
spread (sample standard deviation over seeds) of validation and test accuracy and balanced
accuracy; the setting with the best mean validation balanced accuracy is marked (test
numbers are shown, never used to choose).

    python benchmarks/finetune_study.py --run reports/<head run> --out study_elpv.jsonl
    python benchmarks/finetune_study.py --generated /tmp/gen --out study_gen.jsonl
    python benchmarks/finetune_study.py --table study_elpv.jsonl   # table only
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

#: The grid: learning rate x unfreeze point x augmentation (others at their defaults).
GRID = {"learning_rate": [1e-4, 3e-4], "unfreeze_from": ["0.5"], "augment": ["dihedral"],
        "patience": [3]}


def generated_run(root: Path) -> Path:
    """A generated 2-class dataset (a bright diagonal stripe in one direction or the other,
    on noise, with random brightness; 60 images a class at 96 px), extracted with the
    default base and a logreg head fitted: the head run's folder."""
    from PIL import Image

    from pipeline.extract import run_extraction
    from pipeline.runs import fit_heads

    reports = root / "reports"
    done = sorted(p for p in reports.glob("*logreg*") if (p / "metrics.json").is_file())
    if done:
        return done[0]
    rng = np.random.default_rng(0)
    for label, flip in (("rising", True), ("falling", False)):
        (root / "data" / label).mkdir(parents=True, exist_ok=True)
        for i in range(60):
            arr = rng.integers(0, 120, (96, 96, 3)).astype(np.int32)
            idx = np.arange(96)
            shift = rng.integers(-20, 20)
            cols = np.clip((idx[::-1] if flip else idx) + shift, 0, 95)
            for w in range(-2, 3):
                arr[idx, np.clip(cols + w, 0, 95)] += int(rng.integers(40, 120))
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(
                root / "data" / label / f"{i:03d}.png")
    cache = run_extraction(root / "data", ["efficientnet_lite0"], input_size=96,
                           cache_dir=root / "cache", quiet=True)[0].path
    res = fit_heads([cache], ["logreg"], reports_dir=reports, quiet=True)
    return res.runs[0].run_dir


def run_study(run: Path, out: Path, seeds: int, epochs: int, budget: float) -> None:
    from pipeline.finetune import finetune

    t_start = time.perf_counter()
    settings = [{**dict(zip(GRID, values, strict=True)), "epochs": epochs}
                for values in itertools.product(*GRID.values())]
    have = {(json.dumps(r["setting"], sort_keys=True), r["seed"]) for r in read(out)}
    for seed, setting in itertools.product(range(seeds), settings):  # seed-major: partial
        # studies still compare every setting
        if (json.dumps(setting, sort_keys=True), seed) in have:
            continue
        if time.perf_counter() - t_start > budget * 60:
            print(f"budget of {budget:g} min spent; stopping (rerun to continue)")
            return
        res = finetune(run, seed=seed, reports_dir=out.parent / "study_runs", quiet=True,
                       **setting)
        row = {"setting": setting, "seed": seed, "epochs": epochs,
               "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
               "seconds": res.seconds, "run": str(res.run_dir),
               "initial_validation": {k: res.initial_validation[k] for k in
                                      ("accuracy", "balanced_accuracy")},
               **{f"{split}_{k}": getattr(res, split)[k] for split in ("validation", "test")
                  for k in ("accuracy", "balanced_accuracy")}}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row))


def read(out: Path) -> list[dict]:
    if not out.is_file():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def table(rows: list[dict]) -> str:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps(r["setting"], sort_keys=True), []).append(r)
    cols = ("validation_accuracy", "validation_balanced_accuracy", "test_accuracy",
            "test_balanced_accuracy")

    def cell(vals: list[float]) -> str:
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):.3f} ± {sd:.3f}"

    best = max(groups, key=lambda g: statistics.mean(
        r["validation_balanced_accuracy"] for r in groups[g]))
    lines = ["| setting | seeds | val acc | val bal acc | test acc | test bal acc | kept "
             "epochs | s/run |", "|---|---|---|---|---|---|---|---|"]
    for g, rs in groups.items():
        s = json.loads(g)
        label = ", ".join(f"{k}={v}" for k, v in s.items()) + (" **(chosen)**" if g == best
                                                               else "")
        lines.append(f"| {label} | {len(rs)} | " + " | ".join(cell([r[c] for r in rs])
                                                               for c in cols)
                     + f" | {','.join(str(r['best_epoch']) for r in rs)} | "
                     f"{statistics.mean(r['seconds'] for r in rs):.0f} |")
    head = rows[0]["initial_validation"] if rows else {}
    if head:
        lines.append(f"| (the head, before fine-tuning) | - | {head['accuracy']:.3f} | "
                     f"{head['balanced_accuracy']:.3f} | | | | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="head run folder (default: --generated's)")
    ap.add_argument("--generated", type=Path, help="make/use a generated dataset here")
    ap.add_argument("--out", type=Path, default=Path("study.jsonl"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--budget-minutes", type=float, default=60.0)
    ap.add_argument("--table", type=Path, help="only print the table of this JSONL file")
    for name, values in GRID.items():
        ap.add_argument(f"--{name.replace('_', '-')}", nargs="+", default=values,
                        type={"learning_rate": float, "patience": int}.get(name, str),
                        help="grid values")
    args = ap.parse_args()
    GRID.update({name: getattr(args, name) for name in GRID})
    if args.table:
        print(table(read(args.table)))
        return
    run = Path(args.run) if args.run else generated_run(args.generated)
    run_study(run, args.out.resolve(), args.seeds, args.epochs, args.budget_minutes)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(table(read(args.out)))


if __name__ == "__main__":
    main()
