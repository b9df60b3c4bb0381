"""GPU benchmark: locktune's LiT text-tower step vs open_clip 3.3.0's `--lock-image` and text-only steps.

All arms train the same text tower shape (open_clip's ViT-B-16 text config: width 512, 12 layers, 8
heads, 77 tokens, vocab 49,408, embed 512) with bf16 autocast on random data, and report pairs/s in
one run.  locktune's arm reads cached image embeddings (no image tower at all); open_clip's
`--lock-image` arm runs the frozen ViT-B/16 forward each step, its text-only arm is given precomputed
image embeddings.  Then locktune's largest batch: gradient caching in chunks up to --max-batch.
Every locktune arm runs once per loss in --losses (default: softmax `global` and `sigmoid`), side by side
in the same row: pairs/s and peak GPU memory at the same batch.

    python benchmarks/gpu_text_tower.py                    # on the GPU machine
    python benchmarks/gpu_text_tower.py --tiny --device cpu   # smoke test here (tests run it)

Achieved TFLOP/s counts 6 x non-embedding parameters x tokens plus attention's 12 x layers x tokens^2
x width per pair (forward + backward), against the part's dense bf16 peak (`gpu_device.py`: H200 / H100 SXM
989, H200 NVL / H100 NVL 835, H100 PCIe 756 TFLOP/s), or --peak-tflops.  The JSON records the device name
from torch and nvidia-smi, its memory, the part matched and the peak used.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("LOCKTUNE_QUIET", "1")

from locktune.config import ModelConfig  # noqa: E402
from locktune.model import build_model  # noqa: E402
from locktune.train.step import Batch, gradient_cached_step, whole_step  # noqa: E402

from gpu_device import device_report  # noqa: E402  (beside this script)

VIT_B16_TEXT = {"width": 512, "layers": 12, "heads": 8, "tokens": 77, "vocab": 49408, "embed": 512, "image_dim": 768}
TINY_TEXT = {"width": 64, "layers": 2, "heads": 2, "tokens": 16, "vocab": 1000, "embed": 64, "image_dim": 96}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per step, after warm-up (compilation, allocator, cuDNN autotuning)."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return (time.perf_counter() - start) / iters


def flops_per_pair(shape: dict, params_no_embedding: int) -> float:
    t, w, layers = shape["tokens"], shape["width"], shape["layers"]
    return 6 * params_no_embedding * t + 12 * layers * t * t * w


def locktune_model(shape: dict, device: torch.device, compile_tower: bool, loss: str = "global"):
    config = ModelConfig(setting="Lu", text_tower="clip", image_tower="mobilenet_v2", embed_dim=shape["embed"],
                         max_text_len=shape["tokens"], text_width=shape["width"], text_layers=shape["layers"],
                         text_heads=shape["heads"])
    model = build_model(config, corpus=lambda: ["a photo of a cat", "a dog"] * 10, loss=loss)
    tower = model.text_tower
    tower.token_embedding = nn.Embedding(shape["vocab"], shape["width"])  # CLIP's vocabulary size
    model.image_projection = nn.Linear(shape["image_dim"], shape["embed"], bias=False)  # ViT-B/16 width
    del model.image_tower  # never used: image embeddings come from the cache
    model.to(device)
    if compile_tower:
        tower.compile()
    params = sum(p.numel() for n, p in tower.named_parameters() if "embedding" not in n)
    return model, params


def locktune_arm(shape, device, batch_size, chunk, autocast, compile_tower, warmup, iters, loss="global"):
    model, params = locktune_model(shape, device, compile_tower, loss)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device.type == "cuda")
    ids = torch.randint(3, shape["vocab"], (batch_size, shape["tokens"]), device=device)
    batch = Batch(ids, torch.ones_like(ids), features=torch.randn(batch_size, shape["image_dim"], device=device))

    def step():
        optimizer.zero_grad(set_to_none=True)
        if chunk and chunk < batch_size:
            gradient_cached_step(model, batch, autocast, chunk, loss)
        else:
            whole_step(model, batch, autocast, loss)
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, device, warmup, iters)
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return seconds, params, memory


def other_loss(loss, reference_pairs_s, shape, device, batch_size, chunk, autocast, args, iters=None,
               warmup=None) -> dict:
    """The locktune arm again with another train.loss, at the same batch (and chunk): `{loss}_pairs_s`,
    `{loss}_peak_gib`, and its speed relative to the first loss."""
    try:
        seconds, _, memory = locktune_arm(shape, device, batch_size, chunk, autocast, args.compile,
                                          args.warmup if warmup is None else warmup,
                                          args.iters if iters is None else iters, loss)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {f"{loss}_pairs_s": "out of memory"}
    pairs_s = round(batch_size / seconds)
    return {f"{loss}_pairs_s": pairs_s, f"{loss}_peak_gib": memory,
            f"{loss}_speed_vs_first": round(pairs_s / reference_pairs_s, 3)}


def open_clip_arms(shape, device, batch_size, autocast, warmup, iters) -> dict:
    """open_clip's own model and loss: `--lock-image` (frozen image tower runs) and text-only steps."""
    import open_clip
    from open_clip.loss import ClipLoss

    model = open_clip.create_model("ViT-B-16", pretrained=None).to(device)
    model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
    loss_fn = ClipLoss()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    images = torch.randn(batch_size, 3, 224, 224, device=device)
    # open_clip's own text shape (77 tokens, 49,408 ids); with --tiny only the code path is exercised.
    texts = torch.randint(0, model.vocab_size, (batch_size, model.context_length), device=device)
    with torch.no_grad(), autocast:
        image_features = F.normalize(model.encode_image(images), dim=-1).float()

    def lock_image_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            image_out, text_out, scale = model(images, texts)[:3]  # normalised features, logit scale
            loss = loss_fn(image_out, text_out, scale)
        loss.backward()
        optimizer.step()

    def text_only_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            text_features = F.normalize(model.encode_text(texts), dim=-1)
            loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        loss.backward()
        optimizer.step()

    return {"open_clip_lock_image": timed(lock_image_step, device, warmup, iters),
            "open_clip_text_only": timed(text_only_step, device, warmup, iters)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny tower shape, for a CPU smoke test")
    parser.add_argument("--batches", default="1024,4096")
    parser.add_argument("--max-batch", type=int, default=32768, help="largest batch, through the gradient cache")
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--compile", action="store_true", help="torch.compile locktune's text tower")
    parser.add_argument("--no-open-clip", action="store_true")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of this part (default: from the device name, gpu_device.py)")
    parser.add_argument("--losses", default="global,sigmoid",
                        help="locktune arms, by train.loss name; the first is the reference for the ratios")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    device = torch.device(args.device)
    shape = TINY_TEXT if args.tiny else VIT_B16_TEXT
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    machine = device_report(device, args.peak_tflops)
    peak = machine["peak_bf16_tflops"]
    losses = [name for name in args.losses.split(",") if name]
    report = {"device": machine["name"], "machine": machine, "shape": shape, "torch": torch.__version__,
              "compile": args.compile, "losses": losses, "rows": []}
    for batch_size in [int(b) for b in args.batches.split(",")]:
        seconds, params, memory = locktune_arm(shape, device, batch_size, 0, autocast, args.compile, args.warmup,
                                               args.iters, losses[0])
        flops = flops_per_pair(shape, params) * batch_size / seconds
        row = {"batch": batch_size, "loss": losses[0], "locktune_pairs_s": round(batch_size / seconds),
               "locktune_tflops": round(flops / 1e12, 2), "fraction_of_peak": round(flops / 1e12 / peak, 3) if peak else None,
               "locktune_peak_gib": memory}
        for loss in losses[1:]:
            row.update(other_loss(loss, row["locktune_pairs_s"], shape, device, batch_size, 0, autocast, args))
        if not args.no_open_clip:
            try:
                peers = open_clip_arms(shape, device, batch_size, autocast, args.warmup, args.iters)
                for name, s in peers.items():
                    row[f"{name}_pairs_s"] = round(batch_size / s)
                row["speedup_vs_text_only"] = round(row["locktune_pairs_s"] / row["open_clip_text_only_pairs_s"], 2)
            except ImportError as error:
                row["open_clip"] = f"not installed ({error}); pip install open_clip_torch==3.3.0"
            except (RuntimeError, AttributeError, OSError) as error:  # e.g. torchvision built for another torch
                row["open_clip"] = f"does not import here: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
            except torch.cuda.OutOfMemoryError:
                row["open_clip"] = "out of memory"
                torch.cuda.empty_cache()
        report["rows"].append(row)
        print(json.dumps(row), flush=True)
    seconds, params, memory = locktune_arm(shape, device, args.max_batch, args.chunk, autocast, args.compile, 1,
                                           max(1, args.iters // 5), losses[0])
    report["max_batch"] = {"batch": args.max_batch, "chunk": args.chunk, "loss": losses[0],
                           "pairs_s": round(args.max_batch / seconds), "peak_gib": memory}
    for loss in losses[1:]:
        report["max_batch"].update(other_loss(loss, report["max_batch"]["pairs_s"], shape, device, args.max_batch,
                                              args.chunk, autocast, args, iters=max(1, args.iters // 5), warmup=1))
    print(json.dumps(report["max_batch"]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
