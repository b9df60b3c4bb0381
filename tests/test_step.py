"""The training step (`train/step.py`): the gradient cache equals the whole step with dropout and batch norm,
in float32 and under bf16 autocast, and the loss is float32 whatever the autocast.

The text tower is a tiny BERT saved by `hf_tiny.py` with the library's default dropout (0.1 on hidden states
and attention), so every forward draws masks; the image side is a MobileNetV2 (batch norm).
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from hf_tiny import WORDS, save_text
from locktune.config import ModelConfig
from locktune.loss.contrastive import contrastive_loss
from locktune.model import build_model
from locktune.train.step import Batch, gradient_cached_step, whole_step

ROWS, CHUNK = 12, 4
# bf16 autocast: the two paths run the same bf16 forwards and the same float32 loss; the gradients differ by
# the order in which the float32 loss gradients are summed before bf16 backward kernels round them.  Stated
# tolerance: relative L2 error of the whole gradient vector 1e-3 (measured 2e-8 on CPU), against fp32's 1e-5
# (measured 2e-7).  bf16 against fp32 itself differs by ~1e-2 (BF16_VS_FP32).
BF16_RELATIVE = 1e-3
BF16_VS_FP32 = 5e-2


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return save_text("bert", tmp_path_factory.mktemp("bert-dropout"))


def make_model(folder, setting="LU", device="cpu"):
    torch.manual_seed(0)
    model = build_model(ModelConfig(setting=setting, image_tower="mobilenet_v2", text_tower=f"hf:{folder}",
                                    image_size=32, max_text_len=12, embed_dim=16))
    return model.to(device).train()


def make_batch(model, pixels: bool = False, device="cpu") -> Batch:
    g = torch.Generator().manual_seed(1)
    captions = [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (3 + k % 5,), generator=g))
                for k in range(ROWS)]
    tokens = model.tokenize(captions)
    batch = Batch(tokens["ids"].to(device), tokens["mask"].to(device))
    if pixels:
        batch.pixels = torch.randn(ROWS, 3, 32, 32, generator=g).to(device)
    else:
        batch.features = torch.randn(ROWS, 1280, generator=g).to(device)
    return batch


def gradients(step, model, batch, autocast=None, **kw):
    model.zero_grad(set_to_none=True)
    loss = step(model, batch, autocast or nullcontext(), **kw)
    return loss, torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def check_cached_equals_whole(bert, device="cpu", autocast=None, tolerance=1e-5):
    model = make_model(bert, device=device)
    batch = make_batch(model, device=device)
    whole_loss, whole = gradients(whole_step, model, batch, autocast, chunk=CHUNK, seed=5)
    cached_loss, cached = gradients(gradient_cached_step, model, batch, autocast, chunk=CHUNK, seed=5)
    assert whole_loss.dtype == cached_loss.dtype == torch.float32
    assert abs(float(whole_loss) - float(cached_loss)) < tolerance
    assert relative(cached, whole) < tolerance, relative(cached, whole)
    # The dropout really draws masks: another seed moves the gradient far more than the tolerance.
    _, other = gradients(whole_step, model, batch, autocast, chunk=CHUNK, seed=6)
    assert relative(other, whole) > max(0.1, 10 * tolerance)
    print(f"relative gradient error {relative(cached, whole):.2e}, other seed {relative(other, whole):.2e}")
    return relative(cached, whole)


def test_cached_step_equals_whole_step_with_dropout_fp32(bert):
    check_cached_equals_whole(bert, tolerance=1e-5)


def test_cached_step_equals_whole_step_with_dropout_bf16(bert):
    check_cached_equals_whole(bert, autocast=torch.autocast("cpu", dtype=torch.bfloat16), tolerance=BF16_RELATIVE)
    model = make_model(bert)
    batch = make_batch(model)
    _, fp32 = gradients(whole_step, model, batch, chunk=CHUNK, seed=5)
    _, bf16 = gradients(gradient_cached_step, model, batch, torch.autocast("cpu", dtype=torch.bfloat16), chunk=CHUNK,
                        seed=5)
    assert 1e-4 < relative(bf16, fp32) < BF16_VS_FP32, relative(bf16, fp32)  # autocast really ran in bf16
    print(f"bf16 cached vs fp32 whole: {relative(bf16, fp32):.2e}")


def test_seeded_steps_leave_the_global_generator_alone(bert):
    """The chunk seeds come from (seed, row): the global stream (saved in checkpoints) is not consumed."""
    model = make_model(bert)
    batch = make_batch(model)
    before = torch.get_rng_state()
    gradient_cached_step(model, batch, nullcontext(), CHUNK, seed=3)
    whole_step(model, batch, nullcontext(), chunk=CHUNK, seed=3)
    assert torch.equal(before, torch.get_rng_state())


def test_loss_is_float32_under_bf16_autocast():
    """Against a float64 reference from the formula: bf16 matmuls would be off by ~1e-2."""
    g = torch.Generator().manual_seed(0)
    image, text = F.normalize(torch.randn(16, 32, generator=g), dim=-1), F.normalize(torch.randn(16, 32, generator=g), dim=-1)
    scale = torch.tensor(50.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = contrastive_loss(image, text, scale)
    logits = 50.0 * image.double() @ text.double().T
    labels = torch.arange(16)
    reference = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert got.dtype == torch.float32 and abs(float(got) - float(reference)) < 1e-5


def test_batch_norm_running_statistics_updated_once_per_chunk(bert):
    """A trained MobileNetV2 image tower (batch norm in train mode): after a cached step its running
    statistics equal those of one train-mode forward per chunk, not two."""
    model = make_model(bert, setting="UU")
    batch = make_batch(model, pixels=True)
    reference, initial = copy.deepcopy(model), copy.deepcopy(model.image_tower.state_dict())
    gradient_cached_step(model, batch, nullcontext(), CHUNK, seed=2)
    with torch.no_grad():
        for start in range(0, ROWS, CHUNK):
            reference.encode_image(batch.pixels[start:start + CHUNK])
    stats = {k: v for k, v in model.image_tower.state_dict().items() if "running" in k or "num_batches" in k}
    assert stats and all(int(v) - int(initial[k]) == ROWS // CHUNK for k, v in stats.items() if "num_batches" in k)
    expected = reference.image_tower.state_dict()
    for key, value in stats.items():
        assert torch.allclose(value.double(), expected[key].double(), rtol=0, atol=1e-6), key


def test_cached_step_equals_whole_step_with_dropout_on_the_second_device(bert):
    """The chunks' dropout masks are seeded on the device's own generator (`fakegpu`, tests/test_device.py):
    the no-graph pass, the replay and the whole step draw the same masks there too."""
    check_cached_equals_whole(bert, device="fakegpu", tolerance=1e-5)


@pytest.mark.parametrize("text_tower", ["bert", "clip"])
def test_gradient_checkpointing_gives_the_same_gradients(bert, text_tower):
    """train.grad_checkpointing recomputes the text tower's blocks in backward, replaying their dropout masks:
    the gradients equal the plain step's (the BERT tower has dropout 0.1; the CLIP-style tower none)."""
    from locktune.towers.setting import unwrap

    if text_tower == "bert":
        model = make_model(bert)
    else:
        torch.manual_seed(0)
        model = build_model(ModelConfig(setting="Lu", image_tower="mobilenet_v2", text_tower="clip", image_size=32,
                                        max_text_len=12, embed_dim=16, text_width=32, text_layers=2, text_heads=2,
                                        text_vocab_size=300), corpus=lambda: iter(WORDS)).train()
    batch = make_batch(model)
    torch.manual_seed(3)
    plain_loss, plain = gradients(whole_step, model, batch)
    unwrap(model.text_tower).enable_grad_checkpointing()
    torch.manual_seed(3)
    checkpointed_loss, checkpointed = gradients(whole_step, model, batch)
    assert float(plain_loss) == float(checkpointed_loss)
    assert relative(checkpointed, plain) < 1e-6
    torch.manual_seed(4)  # and the dropout is real: another stream moves the gradient
    if text_tower == "bert":
        assert relative(gradients(whole_step, model, batch)[1], plain) > 0.05


@pytest.mark.slow  # torch.compile of a text tower: 31 s
def test_compiled_text_tower_step_equals_the_eager_step():
    """train.compile=true compiles the text tower in place (torch.compile, inductor on this CPU): the step's loss
    and gradients equal the eager step's to float rounding."""
    from locktune.towers.setting import unwrap

    def model():
        torch.manual_seed(0)
        return build_model(ModelConfig(setting="Lu", image_tower="mobilenet_v2", text_tower="clip", image_size=32,
                                       max_text_len=12, embed_dim=16, text_width=32, text_layers=1, text_heads=2,
                                       text_vocab_size=300), corpus=lambda: iter(WORDS)).train()

    eager = model()
    batch = make_batch(eager)
    eager_loss, eager_grads = gradients(whole_step, eager, batch)
    compiled = model()
    unwrap(compiled.text_tower).compile()
    compiled_loss, compiled_grads = gradients(whole_step, compiled, batch)
    assert abs(float(compiled_loss) - float(eager_loss)) < 1e-5
    assert relative(compiled_grads, eager_grads) < 1e-4
