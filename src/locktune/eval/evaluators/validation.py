"""In-distribution validation: retrieval and the contrastive loss on the run's held-out pairs.

The pairs are the ones its training held out (`data.validation_fraction`, chosen by a stable hash of each
pair's image, never trained on; `eval/run_pairs.py`), so the task needs the run's DataConfig: `run_tasks(...,
data=config.data)`.  Without one, or with `validation_fraction` 0, the result is a recorded skip
({"skipped": why, "pairs": 0}) and the other tasks run as usual.

Metrics, over the pairs whose image is readable, in data order (`max_images` > 0 takes that many spread
evenly over them):
- image_to_text_R@k / text_to_image_R@k (k = 1, 5, 10): every caption of every pair, the standard way
  (`metrics.retrieval_recalls`: an image is right if any of its captions is in its top k; ties pessimistic).
- loss: the model's OWN training loss (`loss_name`: softmax InfoNCE, (CE image->text + CE text->image) / 2, for
  `global`/`local`; SigLIP's sigmoid loss for `sigmoid`, with the model's bias), with its own temperature
  (`model.scale`), in eval mode, of each pair's FIRST caption, in consecutive batches of BATCH_SIZE pairs in
  data order, averaged over the full batches (the last, partial batch is left out, so every pair is scored
  against the same number of negatives; `loss_pairs` says how many pairs that is).  With fewer than
  BATCH_SIZE pairs, one batch of all of them (`batch_size` records which).  Losses of two kinds do not compare:
  `in_batch_R@1` over the same batches does (`eval/ood_loss.py`).  (Records before 0.3 hold `contrastive_loss`,
  the softmax loss whatever the model trained with.)
- pairs (readable held-out pairs), chance_R@1, chance_loss (of the own loss: `ood_loss.chance_loss`).
"""

from __future__ import annotations

import torch

from locktune.data.images import SubsetImages
from locktune.data.pairs import take_evenly
from locktune.eval.evaluation import EVALUATORS, Evaluation, Reporter, SummaryValue, register_reporter
from locktune.eval.evaluators.retrieval import recall_header, recall_row
from locktune.eval.metrics import retrieval_recalls
from locktune.eval.ood_loss import batched_recall_at_1, chance_loss, loss_name, own_loss
from locktune.eval.run import image_embeddings
from locktune.eval.run_pairs import split_run_pairs, validation_fraction
from locktune.eval.zero_shot import encode_texts

KIND = "validation"
BATCH_SIZE = 256


def skipped(reason: str) -> Evaluation:
    return Evaluation(KIND, {"skipped": reason, "pairs": 0})


def skip_reason(data) -> str | None:
    if data is None:
        return "no run data config was given (run_tasks(..., data=config.data)): the held-out pairs are unknown"
    if validation_fraction(data) <= 0:
        return "data.validation_fraction is 0: the run held out no validation pairs"
    return None


@torch.no_grad()
def validation_metrics(model, image_emb: torch.Tensor, captions: list[list[str]],
                       batch_size: int = BATCH_SIZE) -> dict[str, float]:
    """Recall@k both ways over every caption, and the batched loss of each pair's first caption.
    image_emb: [pairs, dim] normalised, all readable; captions[i]: pair i's captions (at least one)."""
    texts = [c for caps in captions for c in caps]
    owner = torch.tensor([row for row, caps in enumerate(captions) for _ in caps])
    first = torch.tensor([0] + [len(caps) for caps in captions[:-1]]).cumsum(0)  # each pair's first caption
    text_emb = encode_texts(model, texts)
    metrics = retrieval_recalls(image_emb @ text_emb.T, owner)
    batch = min(batch_size, len(captions))
    metrics["loss"] = own_loss(model, image_emb, text_emb[first], batch)
    metrics["loss_name"] = loss_name(model)
    metrics["in_batch_R@1"] = batched_recall_at_1(image_emb, text_emb[first], batch)
    metrics["loss_pairs"] = len(captions) // batch * batch
    metrics["batch_size"] = batch
    metrics["chance_loss"] = chance_loss(metrics["loss_name"], batch)
    metrics["chance_R@1"] = 1.0 / len(captions)
    metrics["pairs"] = len(captions)
    return metrics


@EVALUATORS.register("validation")
def evaluate(model, benchmark_name: str, max_images: int, workers: int, data=None, **_) -> Evaluation:
    reason = skip_reason(data)
    if reason:
        return skipped(reason)
    _, held = split_run_pairs(data)
    result = held_out_evaluation(model, held, max_images, workers)
    if "skipped" in result.metrics:
        return skipped(f"{result.metrics['skipped']} (data.validation_fraction={validation_fraction(data)})")
    result.metrics["validation_fraction"] = validation_fraction(data)
    result.metrics["sources"] = "+".join(data.sources)
    return result


def held_out_evaluation(model, held, max_images: int, workers: int) -> Evaluation:
    """The validation metrics of a set of held-out pairs (a `PairSet`): what `evaluate` reports on the run's
    split, and what training evaluates during the run (`train.eval_every`) on the pairs it held out."""
    rows = take_evenly(len(held), max_images)
    images = held.images if len(rows) == len(held) else SubsetImages(held.images, rows)
    image_emb, valid = image_embeddings(model, images, workers, desc=f"embedding {held.name}")
    readable = [j for j in range(len(rows)) if bool(valid[j]) and held.captions[rows[j]]]
    if not readable:
        return skipped(f"no readable validation pair among the {len(held)} held out")
    metrics = validation_metrics(model, image_emb[readable], [held.captions[rows[j]] for j in readable])
    metrics["held_out"] = len(held)
    metrics["dataset_fingerprint"] = images.fingerprint()
    return Evaluation(KIND, metrics)


def markdown(results: dict[str, dict]) -> list[str]:
    lines = recall_header("validation pairs, held out of the run's data (%)")
    lines += [recall_row(n, m["pairs"], m) if "skipped" not in m else f"| {n} | skipped: {m['skipped']} |"
              for n, m in results.items()]
    lines += ["", "| the model's own loss, validation pairs | loss | pairs in full batches | batch | loss | chance "
              "| in-batch R@1 |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {m.get('loss_name', 'softmax')} | {m['loss_pairs']} | {m['batch_size']} | {own(m):.3f} "
              f"| {m['chance_loss']:.3f} | {_percent(m.get('in_batch_R@1'))} |"
              for n, m in results.items() if "skipped" not in m]
    return lines + [""]


def own(metrics: dict) -> float:
    """The recorded own loss (`contrastive_loss` in records written before it was the model's own)."""
    return float(metrics["loss"] if "loss" in metrics else metrics["contrastive_loss"])


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _own_loss(results: dict[str, dict]) -> float | None:
    return next((own(m) for m in results.values() if "loss" in m or "contrastive_loss" in m), None)


def _mean_r1(results: dict[str, dict]) -> float | None:
    return next(((m["image_to_text_R@1"] + m["text_to_image_R@1"]) / 2 for m in results.values()
                 if "image_to_text_R@1" in m), None)


register_reporter(Reporter(
    KIND, headline=("image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5",
                    "loss", "chance_loss", "in_batch_R@1"),
    markdown=markdown, recognise=lambda m: "contrastive_loss" in m or ("loss_name" in m and "loss" in m),
    summaries=(SummaryValue("validation_loss", "validation loss (held-out pairs)",
                            _own_loss),
               SummaryValue("validation_R@1", "validation R@1 (mean I→T, T→I)", _mean_r1)),
    task_columns=("image_to_text_R@1", "text_to_image_R@1"), chance="chance_R@1"))
