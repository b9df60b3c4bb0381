"""`locktune towers`: the tower kinds and bundled towers, or one tower's width, preprocessing and letters."""

from __future__ import annotations

import argparse
import json


def cmd_towers(args) -> int:
    from locktune.towers.describe import FROM_SCRATCH, KINDS, describe_tower
    from locktune.towers.image import IMAGE_TOWERS
    from locktune.towers.text import TEXT_TOWERS

    if not args.name:
        print("Tower kinds (model.image_tower / model.text_tower = KIND:SPEC):")
        for kind, (side, form, text) in KINDS.items():
            print(f"  {form:32s} {side:14s} {text}")
        print("Bundled image towers (offline, ImageNet-1k supervised): " + ", ".join(IMAGE_TOWERS.names()))
        print("Bundled text towers: " + ", ".join(f"{n} (u only)" if n in FROM_SCRATCH else n
                                                for n in TEXT_TOWERS.names()))
        print("Details of one: locktune towers NAME   (e.g. locktune towers hf:./my-vit)")
        return 0
    facts = describe_tower(args.name, args.pool)
    if args.json:
        print(json.dumps(vars(facts), indent=1))
        return 0
    print(f"{facts.name}: {facts.side} tower")
    if facts.output_dim:
        print(f"  output width   {facts.output_dim}" + (f" (pool: {facts.pool}"
                                                        + (f"; {facts.pool_reason}" if facts.pool_reason else "")
                                                        + ")" if facts.pool else ""))
        print(f"  parameters     {facts.parameters:,}")
    print(f"  letters        {', '.join(facts.letters)}" + ("" if "L" in facts.letters else
                                                             "  (no pretrained weights: from scratch only)"))
    if facts.preprocess:
        p = facts.preprocess
        print(f"  preprocessing  {p['image_size']} px, {p.get('resize', 'pad_square')} ({p['resample']}), "
              f"mean {list(p['mean'])}, std {list(p['std'])}")
    if facts.tokens:
        print(f"  tokens         {facts.tokens}")
    if facts.note:
        print(f"  {facts.note}")
    if facts.transformers_export:
        print(f"  export         {facts.transformers_export}")
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
    tw = sub.add_parser("towers", help="list tower kinds and bundled towers, or describe one tower",
                        epilog="examples:\n  locktune towers\n  locktune towers efficientnet_lite0\n"
                               "  locktune towers hf:./models/dinov2-small --pool cls\n"
                               "  locktune towers hf:xlm-roberta-base --json")
    tw.add_argument("name", nargs="?", help="a tower name: bundled (minilm) or KIND:SPEC (hf:FOLDER_OR_ID)")
    tw.add_argument("--pool", default="auto", help="pooling to describe (model.image_pool / model.text_pool)")
    tw.add_argument("--json", action="store_true", help="print the facts as JSON")
    tw.set_defaults(run=cmd_towers)
