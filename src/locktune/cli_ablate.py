"""`locktune ablate`: run grids of training runs and write their reports (and RESULTS.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _names(text: str | None) -> list[str] | None:
    return [t for t in text.split(",") if t] if text else None


def _recorded_run(grid, out_dir: Path, results: Path | None):
    """`--report-only`: the grid's records under `out_dir`; where there are none and a findings document is
    being written, the records committed beside it (results/GRID), so that one command rewrites RESULTS.md
    from the grids just run and the ones run before."""
    from locktune.ablate.records import read_records
    from locktune.ablate.report import committed_folder
    from locktune.ablate.runner import GridRun

    records = read_records(out_dir) if out_dir.exists() else []
    if records or results is None:
        if not records:
            print(f"{grid.name}: no records in {out_dir}")
        return GridRun(grid, out_dir, records, [], [])
    committed = committed_folder(results, grid.name)
    records = read_records(committed) if committed.exists() else []
    print(f"{grid.name}: no records in {out_dir}; " + (f"the {len(records)} in {committed} kept" if records
                                                         else f"none in {committed} either"))
    return GridRun(grid, committed, records, [], [])


def cmd_ablate(args) -> int:
    from locktune.ablate.grid import load_grid
    from locktune.ablate.report import write_grid_report, write_results_document
    from locktune.ablate.runner import run_grid

    from locktune.errors import LocktuneError

    overrides = [a for a in args.grids if "=" in a]  # positional key=value, as in every other command
    paths = [a for a in args.grids if "=" not in a]
    if not paths:
        raise LocktuneError("give at least one grid, e.g. locktune ablate studies/towers_r3.yaml")
    grids = [load_grid(path) for path in paths]  # every file checked before any training
    seeds = [int(s) for s in _names(args.seeds)] if args.seeds else None
    root = Path(args.out) if args.out else Path("runs") / ("studies-smoke" if args.smoke else "studies")
    runs = []
    for grid in grids:
        out_dir = root / grid.name
        if args.report_only:
            run = _recorded_run(grid, out_dir, Path(args.results) if args.results else None)
            runs.append(run)
            if run.out_dir != out_dir:  # the committed records: RESULTS.md is their report
                continue
        else:
            run = run_grid(grid, out_dir, only_arms=_names(args.arms), seeds=seeds, extra=overrides,
                           smoke=args.smoke, keep_checkpoints=args.keep_checkpoints)
            runs.append(run)
        report = write_grid_report(run.grid, run.records, out_dir)
        print(f"report: {report}")
    if args.results:
        import sys

        command = "locktune " + " ".join(sys.argv[1:])
        path = write_results_document(runs, Path(args.results), command=command)
        print(f"results: {path}")
    return 0


def add_command(sub: argparse._SubParsersAction, listed: str = "") -> None:
    from locktune.cli_common import examples
    from locktune.packaged import shipped_configs

    grids = ", ".join(name for name in shipped_configs("studies") if not name.endswith("base.yaml"))
    ab = sub.add_parser("ablate", help="run a grid of training runs (arms x seeds), evaluate each, report",
                        epilog=examples("locktune ablate studies/towers_r3.yaml --smoke",
                                        "locktune ablate studies/towers_r3.yaml --arms LU,UU --seeds 0,1,2,3,4",
                                        "locktune ablate studies/loss_batch.yaml train.steps=60 data.max_train_pairs=500",
                                        "locktune ablate --report-only --results RESULTS.md studies/towers_r3.yaml",
                                        extra=f"shipped grids: {grids}\n{listed}"))
    ab.add_argument("grids", nargs="+", metavar="GRID|key.sub=value",
                    help="grid files (a path, or a shipped name such as studies/towers_r3.yaml), and config overrides "
                         "for every arm")
    ab.add_argument("--out", help="folder for the grids' runs, one subfolder per grid "
                    "(default: runs/studies, runs/studies-smoke with --smoke)")
    ab.add_argument("--arms", help="only these arms, comma-separated")
    ab.add_argument("--seeds", help="only these seeds, comma-separated")
    ab.add_argument("--smoke", action="store_true", help="the first two arms, one seed, a few steps on a few pairs")
    ab.add_argument("--keep-checkpoints", action="store_true",
                    help="keep each finished arm's training checkpoints (deleted by default; the model/ folder is kept)")
    ab.add_argument("--report-only", action="store_true",
                    help="no training: rewrite the reports from the records (with --results, a grid without "
                         "records under --out keeps the ones committed in results/GRID)")
    ab.add_argument("--results", metavar="PATH", help="also write the findings document (e.g. RESULTS.md) from "
                    "these grids, with their records copied beside it")
    ab.set_defaults(run=cmd_ablate)
