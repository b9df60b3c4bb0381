"""The measurements of the tower-settings study (issue 15, design 2): per-image zero-shot outcomes, the
mean per-class recall summaries (near-OOD apart), the held-out validation pairs' retrieval and loss, the
few-shot draw count per task, and the `towers` suite."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from locktune.config import ModelConfig
from locktune.eval.suites import SUITES, Task, run_tasks

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def tiny_model():
    from locktune.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(setting="LU", image_tower="mobilenet_v2", image_size=64, text_tower="minilm"))
    return model.eval()


def held_out(fraction: float, max_pairs: int = 640) -> SimpleNamespace:
    """A run's DataConfig as the evaluators read it (sources, max_pairs_per_source, validation_fraction)."""
    return SimpleNamespace(sources=["emoji"], max_pairs_per_source=max_pairs, validation_fraction=fraction,
                           max_train_pairs=0)


def test_zero_shot_records_each_images_outcome_but_tables_show_only_numbers(tiny_model):
    from locktune.eval.metrics import mean_per_class_recall
    from locktune.eval.results import markdown_table, results_table

    result = run_tasks(tiny_model, [Task("digits", "zero_shot", "sklearn_digits", 200)], log=lambda _: None)["digits"]
    logits, labels = result.details["logits"], result.details["labels"]
    per_image = result.metrics["per_image"]
    assert len(per_image["correct"]) == result.metrics["images"] == 200
    assert per_image["correct"] == "".join("1" if p == y else "0" for p, y in zip(logits.argmax(1).tolist(),
                                                                                   labels.tolist()))
    assert per_image["labels"] == labels.tolist() and all(type(y) is int for y in per_image["labels"])
    # mean per-class recall is recomputable from the two fields alone (what the per-image bootstrap does)
    correct = torch.tensor([c == "1" for c in per_image["correct"]])
    y = torch.tensor(per_image["labels"])
    recomputed = sum(float(correct[y == c].double().mean()) for c in y.unique()) / len(y.unique())
    assert recomputed == pytest.approx(mean_per_class_recall(logits, labels), abs=1e-12)

    recorded = json.loads(json.dumps({"digits": result.recorded()}))  # what results.json / arm records hold
    assert recorded["digits"]["per_image"] == per_image and recorded["digits"]["kind"] == "classification"
    for table in (results_table(recorded), markdown_table(recorded)):
        assert per_image["correct"] not in table and "per_image" not in table


def _record(eval_results: dict) -> dict:
    return {"grid": "g", "arm": "a", "seed": 0, "eval": eval_results}


def test_mean_zero_shot_recall_leaves_near_ood_tasks_to_their_own_summary():
    from locktune.ablate.records import metric

    def zs(top1, recall):
        return {"kind": "classification", "top1": top1, "mean_per_class_recall": recall, "chance_top1": 0.1}

    record = _record({"fashion_mnist": zs(0.5, 0.4), "tuxpaint_categories_clean": zs(0.7, 0.6),
                      "near_ood/openmoji_groups": zs(0.9, 0.95),
                      "tuxpaint_retrieval_clean": {"kind": "retrieval", "image_to_text_R@1": 0.3,
                                                   "text_to_image_R@1": 0.2, "chance_R@1": 0.01}})
    assert metric(record, "mean_zero_shot_recall") == pytest.approx(0.5)
    assert metric(record, "near_ood_zero_shot_recall") == pytest.approx(0.95)
    assert metric(record, "mean_zero_shot_top1") == pytest.approx((0.5 + 0.7 + 0.9) / 3)  # unchanged: every task
    old = _record({"fashion_mnist": zs(0.5, 0.4)})
    assert metric(old, "near_ood_zero_shot_recall") is None and metric(old, "mean_zero_shot_recall") == 0.4


def _symmetric_infonce_float64(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: float) -> float:
    logits = scale * image_emb.double() @ text_emb.double().T
    diagonal = torch.diagonal(logits)
    image_to_text = (torch.logsumexp(logits, 1) - diagonal).mean()
    text_to_image = (torch.logsumexp(logits, 0) - diagonal).mean()
    return float((image_to_text + text_to_image) / 2)


def test_validation_pairs_loss_equals_an_independent_float64_infonce(tiny_model):
    from locktune.data.pairs import load_pairs
    from locktune.data.validation_split import split_pairs

    data = held_out(0.5)
    metrics = run_tasks(tiny_model, [Task("validation", "validation", "", 0)], log=lambda _: None,
                        data=data)["validation"].metrics
    train, validation = split_pairs(load_pairs(["emoji"], 640), 0.5)
    assert metrics["pairs"] == len(validation) > 256 and len(train) + len(validation) == 640
    assert metrics["batch_size"] == 256 and metrics["loss_pairs"] == 256
    assert metrics["chance_loss"] == pytest.approx(math.log(256))
    for key in ("image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["image_to_text_R@1"] <= metrics["image_to_text_R@5"]

    # Independently: pixels through the whole image side (no cache), each pair's first caption through the
    # text tower unsorted, the first 256 pairs in data order as one batch, in float64.
    with torch.no_grad():
        pixels = torch.stack([tiny_model.preprocess(validation.images.load(i)) for i in range(256)])
        image_emb = tiny_model.encode_image(pixels)
        tokens = tiny_model.tokenize([caps[0] for caps in validation.captions[:256]])
        text_emb = tiny_model.encode_text(tokens["ids"], tokens["mask"])
        expected = _symmetric_infonce_float64(image_emb, text_emb, float(tiny_model.scale))
    assert metrics["loss"] == pytest.approx(expected, rel=1e-4)


def test_validation_metrics_average_full_batches_in_data_order():
    from locktune.eval.evaluators.validation import validation_metrics

    class Texts:  # a text side whose embedding of caption "t<i>" is row i of a fixed table
        scale = torch.tensor(7.0)  # the multiplier (TwoTower.scale)

        def __init__(self, table):
            self.table = table

        def tokenize(self, texts):
            return {"ids": torch.tensor([int(t[1:]) for t in texts]), "mask": None}

        def encode_text(self, ids, mask):
            return self.table[ids]

    torch.manual_seed(1)
    image_emb = torch.nn.functional.normalize(torch.randn(37, 8), dim=-1)
    text_table = torch.nn.functional.normalize(torch.randn(40, 8), dim=-1)
    captions = [[f"t{i}"] for i in range(37)]
    captions[3] = ["t3", "t38"]  # a second caption: in retrieval, not in the loss
    metrics = validation_metrics(Texts(text_table), image_emb, captions, batch_size=16)
    expected = sum(_symmetric_infonce_float64(image_emb[s:s + 16], text_table[s:s + 16], 7.0) for s in (0, 16)) / 2
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["loss_pairs"] == 32 and metrics["pairs"] == 37 and metrics["batch_size"] == 16


def test_validation_without_held_out_pairs_is_a_recorded_skip_and_other_tasks_run(tiny_model):
    from locktune.eval.results import markdown_table, results_table

    tasks = [Task("validation", "validation", "", 0), Task("digits", "zero_shot", "sklearn_digits", 50)]
    for data in (held_out(0.0), None):
        results = run_tasks(tiny_model, tasks, log=lambda _: None, data=data)
        validation = results["validation"].recorded()
        assert validation["pairs"] == 0 and validation["kind"] == "validation"
        assert ("validation_fraction is 0" if data else "no run data config") in validation["skipped"]
        assert results["digits"].metrics["images"] == 50
        recorded = {k: e.recorded() for k, e in results.items()}
        assert "skipped: " in results_table(recorded) and "skipped: " in markdown_table(recorded)


def test_fewshot_draws_are_a_task_setting(tiny_model):
    results = run_tasks(tiny_model, [Task("three", "fewshot", "sklearn_digits", 100),
                                     Task("ten", "fewshot", "sklearn_digits", 100, draws=10)], log=lambda _: None)
    assert results["three"].metrics["seeds"] == 3 and results["ten"].metrics["seeds"] == 10
    assert "5shot_top1_std" in results["ten"].metrics


def test_held_out_loss_compares_with_the_runs_training_split():
    from locktune.eval.evaluators.ood_loss import training_pairs

    everything, name = training_pairs(("emoji",), None)
    assert name == "emoji" and len(everything) > 1000
    train, name = training_pairs(("emoji",), held_out(0.25, 400))
    assert name == "emoji (training split)" and 200 < len(train) < 400
    unsplit, _ = training_pairs(("emoji",), held_out(0.0, 400))
    assert len(unsplit) == len(everything)  # a run that held nothing out: every pair, as before


def test_towers_suite_tasks_all_resolve():
    from locktune.eval.benchmarks import check_benchmark_name
    from locktune.eval.evaluation import EVALUATORS, reporters

    reporters()  # registers every evaluator
    tasks = SUITES.get("towers")
    assert len({t.key for t in tasks}) == len(tasks)
    for task in tasks:
        EVALUATORS.get(task.evaluator)
        if task.evaluator != "validation":  # the run's own held-out pairs, not a benchmark
            check_benchmark_name(task.benchmark)
    by_key = {t.key: t for t in tasks}
    assert {"validation", "near_ood/openmoji_groups", "tuxpaint_retrieval_clean", "ood_loss"} <= set(by_key)
    assert all(by_key[k].max_images == 0 for k in ("fashion_mnist", "tuxpaint_categories_clean"))
    assert by_key["animal_mnist"].max_images == 3000
    assert [t.draws for t in tasks if t.evaluator == "fewshot"] == [10]
    assert by_key["ood_loss"].benchmark == "tuxpaint_retrieval_clean"
