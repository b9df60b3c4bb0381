"""locktune: locked-image tuning from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from locktune.errors import LocktuneError

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _config_args(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument("--config", default=default, help="YAML config file (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, e.g. train.steps=100 model.setting=Lu")


def _load(args):
    from locktune.config import load_config

    path = args.config
    if path is not None and not Path(path).is_file() and (REPO_CONFIGS / path).is_file():
        path = REPO_CONFIGS / path
    return load_config(path, args.overrides)


def cmd_embed(args) -> int:
    from locktune.runtime.distributed import distributed_session, is_main

    config = _load(args)
    with distributed_session():
        if args.sharded:
            return _embed_sharded(config, args.sharded, args.shard_size, args.views, is_main())
        return _embed(config, args.no_benchmarks, is_main())


def _embed_sharded(config, folder: str, shard_size: int, views: int, main: bool) -> int:
    """The training sources into a sharded cache folder (resumable: finished shards are kept)."""
    from locktune.cache.sharded import build_sharded_cache
    from locktune.data.pairs import load_pairs
    from locktune.towers.image import build_image_tower
    tower = build_image_tower(config.model.image_tower, pretrained=True, pool=config.model.image_pool)
    preprocess = tower.preprocess(config.model.image_size)
    pairs = load_pairs(config.data.sources, config.data.max_pairs_per_source)
    cache = build_sharded_cache(tower, preprocess, pairs, folder, shard_size=shard_size,
                                workers=config.data.image_workers, views=views)
    if main:
        print(f"{pairs.name}: {len(cache)} pairs, {int(cache.valid.sum())} usable, "
              f"{len(cache.manifest['shards'])} shards: {folder}")
    return 0


def _embed(config, no_benchmarks: bool, main: bool) -> int:
    from locktune.cache.embedding_cache import cached_features
    from locktune.data.pairs import load_pairs
    from locktune.eval.benchmarks import get_benchmark
    from locktune.towers.image import build_image_tower
    tower = build_image_tower(config.model.image_tower, pretrained=True, pool=config.model.image_pool)
    preprocess = tower.preprocess(config.model.image_size)
    sets = [load_pairs(config.data.sources, config.data.max_pairs_per_source)]
    if not no_benchmarks:
        sets += [get_benchmark(n, config.eval.max_images_per_benchmark) for n in config.eval.benchmarks]
    for s in sets:
        result = cached_features(tower, preprocess, s.images, workers=config.data.image_workers,
                                 desc=f"embedding {s.name}")
        state = "computed" if result.computed else "reused"
        if main:
            print(f"{s.name}: {len(s.images)} images, {int(result.valid.sum())} usable, {state}: {result.path}")
    return 0


def cmd_data_export(args) -> int:
    from locktune.data.export import export_webdataset, shard_pattern
    from locktune.data.pairs import load_pairs

    pairs = load_pairs([args.source], args.max_pairs)
    shards, _ = export_webdataset(pairs, args.out_dir, args.shard_size)
    print(f"{pairs.name}: {sum(1 for _ in pairs.captions)} pairs -> {len(shards)} shards: "
          f"{shard_pattern(shards) if shards else args.out_dir}")
    return 0


def cmd_train(args) -> int:
    from locktune.runtime.distributed import distributed_session, is_main
    from locktune.train.trainer import train

    config = _load(args)
    with distributed_session():
        result = train(config, resume=args.resume, stop_after=args.stop_after)
        main = is_main()
    if main:
        print(f"trained {result.steps_done}/{config.train.steps} steps in {result.seconds:.0f}s; "
              f"final loss {result.losses[-1]:.3f}; run folder {result.run_dir}")
    return 0


def cmd_eval(args) -> int:
    import time

    from locktune.config import EvalConfig
    from locktune.eval.benchmarks import check_benchmark_name
    from locktune.eval.suites import SUITES, default_task, run_tasks
    from locktune.report import file_fingerprint, markdown_table, results_table, write_results
    from locktune.saved_model import WEIGHTS, load_any, model_folder

    started = time.time()
    suite = SUITES.get(args.suite) if args.suite else []  # an unknown name fails before any work
    names = args.benchmark or ([] if args.suite else EvalConfig().benchmarks)
    for name in names:
        check_benchmark_name(name)
    model_path = Path(args.model)
    model = load_any(model_path)  # a run folder, a saved-model folder (`locktune export`), an old model.pt
    folder = model_folder(model_path)
    model_file = folder / WEIGHTS if folder is not None else (model_path / "model.pt" if model_path.is_dir()
                                                               else model_path)
    tasks = list(suite) + [default_task(name, args.max_images) for name in names]
    evaluations = run_tasks(model, tasks, workers=args.workers, train_sources=tuple(args.train_sources.split(",")))
    fingerprint = file_fingerprint(model_file)
    results = {}
    for key, evaluation in evaluations.items():
        results[key] = {**evaluation.metrics, "model_fingerprint": fingerprint}
    out = Path(args.out) if args.out else (model_path if model_path.is_dir() else model_path.parent) / "results.json"
    write_results(results, out)
    table = out.with_suffix(".md")
    table.write_text(f"Model `{model_file}` (sha256 {fingerprint}), setting {model.config.setting}, "
                     f"{model.config.image_tower} at {model.preprocess.image_size}px + {model.config.text_tower}.\n\n"
                     + markdown_table(results))
    print(results_table(results))
    if not args.no_plots:
        from locktune.eval.plots import plot_all

        plots = plot_all(evaluations, out.parent / f"{out.stem}_plots")
        print(f"plots: {len(plots)} in {out.parent / (out.stem + '_plots')}")
    print(f"results: {out}\ntable: {table}\nevaluated in {time.time() - started:.0f}s")
    return 0


def cmd_demo(args) -> int:
    from locktune.demo import run_demo

    return run_demo(_load(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="locktune", description=__doc__.splitlines()[0] if __doc__ else None)
    from locktune import __version__

    parser.add_argument("--version", action="version", version=f"locktune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="build the offline data, cache embeddings, train LU, evaluate, report")
    _config_args(demo, "demo.yaml")
    demo.set_defaults(run=cmd_demo)

    embed = sub.add_parser("embed", help="precompute the locked image tower's embeddings (training + benchmarks)")
    _config_args(embed)
    embed.add_argument("--no-benchmarks", action="store_true", help="only the training sources")
    embed.add_argument("--sharded", metavar="FOLDER", help="write the training sources to a sharded cache in "
                       "FOLDER (float16 shards + manifest; rerun to resume after a kill); benchmarks are not embedded")
    embed.add_argument("--shard-size", type=int, default=8192,
                       help="rows per shard with --sharded (default: %(default)s)")
    embed.add_argument("--views", type=int, default=1, help="with --sharded: embeddings per image, the first plain, "
                       "the others seeded random crops (default: %(default)s)")
    embed.set_defaults(run=cmd_embed)

    data = sub.add_parser("data", help="work with pair sources (export to WebDataset shards)")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    export = data_sub.add_parser("export", help="write a pair source to WebDataset tar shards (img2dataset layout)")
    export.add_argument("source", help="a source name (emoji) or path: shards 'd/{00000..00009}.tar', "
                        "'manifest:f.csv?image=COL&caption=COL', 'folder:DIR'")
    export.add_argument("out_dir", help="folder for 00000.tar, 00001.tar, ...")
    export.add_argument("--shard-size", type=int, default=1000, help="records per shard (default: %(default)s)")
    export.add_argument("--max-pairs", type=int, default=0, help="at most this many pairs, spread evenly; 0 = all")
    export.set_defaults(run=cmd_data_export)

    train = sub.add_parser("train", help="train a two-tower model")
    _config_args(train)
    train.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    train.add_argument("--stop-after", type=int, default=None, metavar="STEP", help="stop after this many steps")
    train.set_defaults(run=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a trained model on benchmarks")
    ev.add_argument("model", help="run folder, saved-model folder, or an old run's model.pt")
    ev.add_argument("--suite", help="a benchmark suite, e.g. 'offline' (zero-shot, retrieval, multilingual, "
                    "few-shot, out-of-distribution loss)")
    ev.add_argument("--benchmark", action="append", help="benchmark name, or KIND:PATH for a local copy "
                    "(folder:, table:, imagenet:, caltech101: ...) (repeatable); default: the demo set")
    ev.add_argument("--max-images", type=int, default=1000, help="images per --benchmark, 0 = all")
    ev.add_argument("--out", help="results JSON path (default: beside the model); the markdown table and "
                    "plots go beside it")
    ev.add_argument("--no-plots", action="store_true", help="skip the plots")
    ev.add_argument("--workers", type=int, default=1, help="image decoding processes")
    ev.add_argument("--train-sources", default="openclipart,emoji",
                    help="the pair sources the model was trained on, for the ood_loss evaluator")
    ev.set_defaults(run=cmd_eval)

    from locktune.cli_use import add_commands

    add_commands(sub)  # export, index, serve
    from locktune.cli_ablate import add_command as add_ablate

    add_ablate(sub)
    from locktune.cli_towers import add_command as add_towers

    add_towers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except LocktuneError as error:
        print(f"locktune: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("locktune: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
