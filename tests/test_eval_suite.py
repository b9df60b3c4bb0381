"""`locktune eval` end to end on a tiny untrained model: JSON with fingerprints, markdown, plots, and the
supervised-classifier reference checked against the full MobileNetV2 run independently."""

import json

import pytest
import torch

from locktune.cli import main
from locktune.config import ModelConfig
from locktune.eval.benchmarks import check_benchmark_name, get_benchmark
from locktune.eval.suites import SUITES, Task, run_tasks


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from locktune.model import build_model
    from locktune.saved_model import save_pretrained

    torch.manual_seed(0)
    model = build_model(ModelConfig(setting="LU", image_tower="mobilenet_v2", image_size=64, text_tower="minilm"))
    folder = tmp_path_factory.mktemp("tiny-model")
    save_pretrained(model, folder / "model")  # a run folder as training leaves it
    return folder


def test_offline_suite_names_only_registered_benchmarks():
    """Every suite's tasks: unique keys, a registered evaluator, and a registered benchmark of the kind that
    evaluator reads; the offline suite is the README's list, written out here.  A misspelt name is refused."""
    from locktune.errors import LocktuneError
    from locktune.eval.benchmarks import ClassificationSet, MultilingualRetrievalSet, RetrievalSet
    from locktune.eval.evaluation import EVALUATORS

    kinds = {"zero_shot": ClassificationSet, "fewshot": ClassificationSet, "retrieval": RetrievalSet,
             "ood_loss": RetrievalSet, "multilingual": MultilingualRetrievalSet}
    offline = ["fashion_mnist", "mnist", "animal_mnist", "sklearn_digits", "tuxpaint_categories", "openmoji_groups",
               "foolbox_imagenet", "foolbox_cifar10", "foolbox_cifar100", "tuxpaint_retrieval", "tuxpaint_multilingual",
               "fewshot/fashion_mnist", "fewshot/mnist", "fewshot/animal_mnist", "fewshot/sklearn_digits",
               "fewshot/tuxpaint_categories", "ood_loss"]
    assert [task.key for task in SUITES.get("offline")] == offline
    assert {"offline", "ablation", "towers"} <= set(SUITES.names())
    seen: dict = {}
    for suite in SUITES.names():
        tasks = SUITES.get(suite)
        assert tasks and len({task.key for task in tasks}) == len(tasks), suite
        for task in tasks:
            assert task.evaluator in EVALUATORS, (suite, task)
            if task.evaluator == "validation":  # the run's own held-out pairs: no benchmark
                assert task.benchmark == "", (suite, task)
                continue
            check_benchmark_name(task.benchmark)
            if suite == "offline":  # loading the others' `_clean` / half sets (near-duplicate search) takes minutes
                if task.benchmark not in seen:
                    seen[task.benchmark] = get_benchmark(task.benchmark, 4)
                assert type(seen[task.benchmark]) is kinds[task.evaluator], (suite, task)
    with pytest.raises(LocktuneError, match="unknown benchmark 'fashion_mnst'; valid: .*fashion_mnist"):
        check_benchmark_name("fashion_mnst")


def test_eval_writes_results_markdown_and_plots(tiny_model_dir, tmp_path, capsys):
    from PIL import Image

    for cls, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        for i in range(3):
            (tmp_path / "mine" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), colour).save(tmp_path / "mine" / cls / f"{i}.png")
    out = tmp_path / "res" / "results.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--out", str(out), "eval.max_images_per_benchmark=30",
                 f"eval.benchmarks=[foolbox_cifar10,tuxpaint_retrieval,folder:{tmp_path / 'mine'}]"])
    assert code == 0, capsys.readouterr().err
    results = json.loads(out.read_text())
    assert set(results) == {"foolbox_cifar10", "tuxpaint_retrieval", f"folder:{tmp_path / 'mine'}"}
    cifar = results["foolbox_cifar10"]
    # Foolbox's 20 CIFAR-10 samples hold no bird and no deer: those classes are named and left out, and chance is
    # over the 8 classes scored (issue 25: chance and recall over the same classes).
    present = sorted(set(get_benchmark("foolbox_cifar10").labels))
    assert len(present) == 8
    assert cifar["images"] == 20 and cifar["chance_top1"] == pytest.approx(1 / 8)
    assert sorted(cifar["dropped_classes"]) == ["bird", "deer"]
    assert len(cifar["model_fingerprint"]) == 16 and len(cifar["dataset_fingerprint"]) == 16
    assert results["tuxpaint_retrieval"]["images"] == 30

    # The reference, recomputed with the complete torchvision-keyed MobileNetV2 (classifier included).
    from locktune.eval.benchmarks.foolbox_samples import CIFAR10_TO_IMAGENET
    from locktune.towers.image.mobilenet_v2 import MobileNetV2Net, weights_path
    from locktune.towers.image.preprocess import Preprocess

    net = MobileNetV2Net()
    net.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    net.eval()
    bench = get_benchmark("foolbox_cifar10")
    prep = Preprocess(64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with torch.no_grad():
        logits = net(torch.stack([prep(bench.images.load(i)) for i in range(len(bench.images))]))
    scores = torch.stack([logits[:, CIFAR10_TO_IMAGENET[c]].max(1).values for c in present], 1)
    predicted = torch.tensor(present)[scores.argmax(1)]  # among the classes scored
    expected = float((predicted == torch.tensor(bench.labels)).double().mean())
    assert cifar["supervised_top1"] == pytest.approx(expected)

    markdown = out.with_suffix(".md").read_text()
    assert "| foolbox_cifar10 | 20 | 8 (2 without images left out: bird, deer) |" in markdown and "tower's supervised classifier" in markdown
    plots = sorted(p.name for p in (out.parent / "results_plots").iterdir())
    assert "foolbox_cifar10_confusion.png" in plots and "tuxpaint_retrieval_retrieval_examples.png" in plots


def test_fewshot_and_multilingual_tasks(tiny_model_dir):
    from locktune.saved_model import load_any

    model = load_any(tiny_model_dir)
    results = run_tasks(model, [Task("fs", "fewshot", "sklearn_digits", 100),
                                Task("ml", "multilingual", "tuxpaint_multilingual", 6)], log=lambda _: None)
    fs = results["fs"].metrics
    assert fs["images"] == 100 and "5shot_top1" in fs and "10shot_top1" not in fs  # 10 a class: 10 + 2 > 10
    assert fs["5shot_top1"] > 0.3  # pretrained features separate digits well above chance (10%)
    ml = results["ml"].metrics
    assert ml["languages"] > 50 and "de:image_to_text_R@1" in ml and ml["de:images"] == 6
