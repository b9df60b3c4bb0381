"""The small run configuration tests train with: a CLIP-style text tower trained from scratch against a
locked MobileNetV2 at 64 px, so a step takes milliseconds and has no dropout (exact comparisons)."""

from locktune.config import RunConfig


def tiny_run(run_dir, steps: int = 4, text_layers: int = 1, train: dict | None = None,
             data: dict | None = None) -> RunConfig:
    config = RunConfig()
    config.model.setting, config.model.text_tower, config.model.image_tower = "Lu", "clip", "mobilenet_v2"
    config.model.image_size = 64
    config.model.text_width, config.model.text_layers, config.model.text_heads = 32, text_layers, 2
    config.model.text_vocab_size = 400
    config.train.steps, config.train.batch_size, config.train.warmup_steps = steps, 16, 1
    config.data.image_workers = 0
    for section, values in (("train", train), ("data", data)):
        for key, value in (values or {}).items():
            setattr(getattr(config, section), key, value)
    config.run_dir = str(run_dir)
    return config
