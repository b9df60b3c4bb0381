"""Train and evaluate on a subset of the real built-in data, through the CLI, as a user would."""

import json

from locktune.cli import main


def test_train_then_eval_on_real_data(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--config", "demo.yaml", "data.sources=[emoji]", "data.max_pairs_per_source=256",
                 "model.image_size=64", "train.steps=12", "train.batch_size=32", "train.warmup_steps=2",
                 "train.lr=5e-4", f"run_dir={run}"])
    assert code == 0
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 12
    assert (run / "model" / "model.safetensors").is_file() and not (run / "model.pt").exists()

    out = tmp_path / "results.json"
    code = main(["eval", "--model", str(run), "eval.benchmarks=[fashion_mnist,tuxpaint_retrieval]",
                 "eval.max_images_per_benchmark=60", "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert set(results) == {"fashion_mnist", "tuxpaint_retrieval"}
    fm = results["fashion_mnist"]
    assert fm["images"] == 60 and 0.0 <= fm["top1"] <= fm["top5"] <= 1.0 and fm["chance_top1"] == 0.1
    tr = results["tuxpaint_retrieval"]
    assert tr["images"] == 60
    assert tr["image_to_text_R@1"] <= tr["image_to_text_R@5"] <= tr["image_to_text_R@10"]
    assert "fashion_mnist" in capsys.readouterr().out
