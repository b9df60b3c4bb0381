"""The commands that use a trained model: `export`, `index`, `serve` (added to the main CLI's parser)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# The faiss choice's defaults (locktune.index.choose, not imported here: it pulls in torch); a test keeps them equal.
MAX_INDEX_MEMORY_DEFAULT, FLAT_MAX_DEFAULT = "4GB", 200_000


def cmd_export(args) -> int:
    import locktune
    from locktune.saved_model import load_pretrained, state_equal

    if args.onnx:
        from locktune.extras import require_extra

        require_extra("onnx", "export --onnx")
    # On the CPU whatever the host has: the files are device-independent, and ONNX and transformers' export
    # trace with host tensors.
    model = locktune.load(args.model, device="cpu")
    if args.format == "transformers":
        from locktune.export.transformers_dual import check_dual_encoder

        check_dual_encoder(model.net)  # refused before anything is written
    folder = model.save(args.out)
    # Reload from disk in this process: a folder that does not round-trip is never reported as saved.
    if not state_equal(model.net, load_pretrained(folder)):
        from locktune.errors import LocktuneError

        raise LocktuneError(f"the saved model in {folder} does not reload to the same weights; nothing else was written")
    print(f"saved model: {folder} (load it with locktune.load('{folder}'))")
    if args.onnx:
        from locktune.export.onnx import export_onnx

        for name, path in export_onnx(model.net, folder).items():
            print(f"onnx {name} tower: {path}")
    if args.format == "transformers":
        from locktune.export.transformers_dual import export_dual_encoder

        dual = export_dual_encoder(model.net, Path(folder) / "transformers")
        print(f"transformers model: {dual} (VisionTextDualEncoderModel.from_pretrained('{dual}'), at "
              f"{model.image_size} px; {dual}/README.md has a snippet that runs with transformers alone: open "
              "images as it does, transparency composited on white)")
    return 0


def cmd_index(args) -> int:
    import locktune
    from locktune.errors import LocktuneError
    from locktune.index.build import add_to_index, build_index

    if args.backend == "faiss" or args.max_index_memory or args.flat_max is not None:
        from locktune.extras import require_extra

        require_extra("faiss", "locktune index --backend faiss")  # before the model loads or any image is read
    if args.add_to and (args.out or args.max_index_memory or args.flat_max is not None or args.backend != "brute"):
        raise LocktuneError("--add-to INDEX adds to that index as it was built: drop --out, --backend, "
                            "--max-index-memory and --flat-max")
    if (args.max_index_memory or args.flat_max is not None) and args.backend != "faiss":
        raise LocktuneError("--max-index-memory and --flat-max choose a faiss index: add --backend faiss")
    started = time.time()
    model = locktune.load(args.model, device=args.device)
    labels = None
    if args.labels:
        labels = [line.strip() for line in Path(args.labels).read_text().splitlines() if line.strip()]
    if args.add_to:
        out = args.add_to
        meta = add_to_index(model, args.folder, out, labels)
    else:
        out = args.out or Path(args.folder).resolve().name + ".index"
        options = {"max_index_memory": args.max_index_memory or MAX_INDEX_MEMORY_DEFAULT, "flat_max": args.flat_max}
        meta = build_index(model, args.folder, out, labels, args.backend,
                           **(options if args.backend == "faiss" else {}))
    from locktune.cache.image_side import skipped_summary

    added = f"{meta['added_now']} added, " if "added_now" in meta else ""
    print(f"index: {out}: {meta['count']} images ({added}{skipped_summary(meta['skipped'])}), "
          f"{len(labels or [])} labels given, in {time.time() - started:.0f}s")
    if meta.get("backend") == "faiss":
        from locktune.index.choose import IndexChoice

        print(f"faiss index: {IndexChoice.from_json(meta['index']).describe()}")
    print(f"serve it: locktune serve --model {args.model} --index {out}")
    return 0


def cmd_serve(args) -> int:
    import locktune
    from locktune.extras import require_extra

    require_extra("serve", "locktune serve")
    from locktune.index.build import index_for_model
    from locktune.serve.app import serve

    model = locktune.load(args.model, device=args.device)
    index = index_for_model(model, args.index, reembed=args.reembed) if args.index else None
    print(f"locktune: serving on http://{args.host}:{args.port}/ (API docs at /docs); Ctrl+C stops")
    serve(model, index, args.host, args.port, max_batch=args.max_batch, max_decodes=args.max_decodes,
          max_decode_megapixels=args.max_decode_megapixels)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register export, index and serve on the main parser's subcommands."""
    from locktune.cli_common import device_arg, examples, model_arg

    ex = sub.add_parser("export", help="write a saved-model folder anyone can load (and ONNX towers)",
                        epilog=examples("locktune export --model runs/demo --out exported/",
                                        "locktune export --model runs/demo --out exported/ --onnx",
                                        "locktune export --model runs/hf --out exported/ --format transformers"))
    model_arg(ex)
    ex.add_argument("--out", required=True, metavar="FOLDER", help="the saved-model folder to write")
    ex.add_argument("--onnx", action="store_true", help="also write image.onnx and text.onnx into it")
    ex.add_argument("--format", choices=["locktune", "transformers"], default="locktune",
                    help="transformers: also write OUT/transformers/, a VisionTextDualEncoderModel folder that "
                         "transformers alone loads (both towers hf:, model.image_pool=pooler model.text_pool=pooler) "
                         "(default: %(default)s)")
    ex.set_defaults(run=cmd_export)

    ix = sub.add_parser("index", help="embed a folder of images into a searchable index with thumbnails",
                        epilog=examples("locktune index photos/ --model runs/demo",
                                        "locktune index photos/ --model exported/ --out photos.index "
                                        "--labels labels.txt",
                                        "locktune index photos/ --model runs/demo --backend faiss "
                                        "--max-index-memory 4GB",
                                        "locktune index more_photos/ --model runs/demo --add-to photos.index"))
    ix.add_argument("folder", help="folder of images (searched recursively)")
    model_arg(ix)
    ix.add_argument("--out", metavar="FOLDER", help="index folder to write (default: FOLDERNAME.index)")
    ix.add_argument("--labels", metavar="FILE",
                    help="text file, one label per line, for image -> label (default: file names)")
    ix.add_argument("--backend", choices=["brute", "faiss"], default="brute",
                    help="brute: exact search over float32 vectors in memory, best below ~200k images; faiss: "
                         "memory-mapped float16 vectors and a faiss index chosen from the count and "
                         "--max-index-memory (extra 'faiss') (default: %(default)s)")
    ix.add_argument("--max-index-memory", metavar="SIZE", help="faiss: the memory the index may take, e.g. 4GB, "
                    f"512MB (default: {MAX_INDEX_MEMORY_DEFAULT})")
    ix.add_argument("--flat-max", type=int, metavar="N", help="faiss: exact flat search up to N vectors, "
                    f"approximate above (default: {FLAT_MAX_DEFAULT:,})")
    ix.add_argument("--add-to", metavar="INDEX", help="add FOLDER's images to this existing index (same model; "
                    "nothing already indexed is embedded again)")
    device_arg(ix)
    ix.set_defaults(run=cmd_index)

    sv = sub.add_parser("serve", help="the zero-shot search page and JSON API",
                        epilog=examples("locktune serve --model runs/demo",
                                        "locktune serve --model runs/demo --index photos.index --port 8080",
                                        "locktune serve --model exported/ --host 0.0.0.0"))
    model_arg(sv)
    sv.add_argument("--index", metavar="FOLDER", help="an index folder from `locktune index`")
    sv.add_argument("--reembed", action="store_true", help="an index built with another model: embed its images "
                    "again with this model (otherwise such an index is refused)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    sv.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    sv.add_argument("--max-batch", type=int, default=64, help="concurrent search queries encoded together, at most "
                    "this many at a time; 1 = one at a time (default: %(default)s)")
    sv.add_argument("--max-decodes", type=int, default=2, help="uploaded images decoded and embedded at once; "
                    "more wait up to a second, then get 503 with Retry-After (default: %(default)s)")
    sv.add_argument("--max-decode-megapixels", type=float, default=80.0, help="megapixels (by their headers) "
                    "of the uploads being decoded at once, together; also the largest single upload, up to 40 "
                    "(default: %(default)s)")
    device_arg(sv)
    sv.set_defaults(run=cmd_serve)
