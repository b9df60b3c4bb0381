"""Latent mixup (`train/mixup.py`, train.mixup_alpha): one lambda and one partner per row shared by both sides
(recovered from the output alone), alpha 0 leaves the batch untouched, the draws are a function of (seed, step)
on any device, Beta(alpha, alpha) in distribution, the config refuses what cannot mix, and an LL run with mixup
resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from locktune.errors import LocktuneError
from locktune.train.mixup import mix_batch, mixup_draw
from locktune.train.step import Batch


def batch(rows=8, image_dim=6, text_dim=5, seed=0, device="cpu") -> Batch:
    generator = torch.Generator().manual_seed(seed)
    return Batch(None, None, features=torch.randn(rows, image_dim, generator=generator).to(device),
                 text_features=torch.randn(rows, text_dim, generator=generator).to(device))


def _recover(mixed: np.ndarray, original: np.ndarray) -> list[tuple[int, float]]:
    """For each mixed row, the partner j and lambda with mixed_i = lam x_i + (1 - lam) x_j, found by least
    squares over every candidate j in float64 (independent of how the code drew them)."""
    found = []
    for i, row in enumerate(mixed):
        best = None
        for j in [i] + [j for j in range(len(original)) if j != i]:  # a fixed point of the permutation first
            if j == i:
                lam, err = 1.0, np.abs(row - original[i]).max()
            else:
                d = original[i] - original[j]
                lam = float(np.dot(row - original[j], d) / np.dot(d, d))
                err = np.abs(lam * original[i] + (1 - lam) * original[j] - row).max()
            if best is None or err < best[2]:
                best = (j, lam, err)
        assert best[2] < 1e-5, f"row {i} is no mix of two rows"
        found.append(best[:2])
    return found


def test_both_sides_share_one_lambda_and_one_partner_per_row():
    b = batch()
    mixed = mix_batch(b, 0.4, seed=3, step=7)
    image = _recover(mixed.features.double().numpy(), b.features.double().numpy())
    text = _recover(mixed.text_features.double().numpy(), b.text_features.double().numpy())
    moved = [(i, j, lam) for i, ((j, lam), (tj, tlam)) in enumerate(zip(image, text)) if j != i]
    assert moved, "some rows are mixed with another"
    for i, j, lam in moved:
        assert text[i][0] == j and text[i][1] == pytest.approx(lam, abs=1e-5)  # the same partner and lambda
    assert max(lam for _, _, lam in moved) - min(lam for _, _, lam in moved) < 1e-5  # one lambda for the step
    partners = [j for j, _ in image]
    assert sorted(partners) == list(range(8))  # a permutation: every pair is someone's partner once
    lam, partner = mixup_draw(0.4, seed=3, step=7, rows=8)
    assert partners == partner.tolist() and moved[0][2] == pytest.approx(lam, abs=1e-5)
    assert torch.equal(b.features, batch().features), "the cache's tensors are not written"


def test_alpha_zero_is_the_batch_itself():
    b = batch()
    assert mix_batch(b, 0.0, seed=3, step=7) is b


def test_draws_are_a_function_of_seed_and_step_on_any_device():
    a, again = mixup_draw(0.4, 1, 5, 16), mixup_draw(0.4, 1, 5, 16)
    assert a[0] == again[0] and torch.equal(a[1], again[1])
    assert mixup_draw(0.4, 1, 6, 16)[0] != a[0] and mixup_draw(0.4, 2, 5, 16)[0] != a[0]
    other_rank = mixup_draw(0.4, 1, 5, 16, first_row=16)
    assert other_rank[0] == a[0] and not torch.equal(other_rank[1], a[1])  # lambda global, partners per process
    torch.manual_seed(0)
    before = torch.get_rng_state()
    on_cpu = mix_batch(batch(), 0.4, 1, 5)
    assert torch.equal(torch.get_rng_state(), before), "the global stream does not move"
    on_device = mix_batch(batch(device="fakegpu"), 0.4, 1, 5)  # tests/conftest.py registers the fake device
    assert on_device.features.device.type == "fakegpu"
    assert torch.equal(on_device.features.cpu(), on_cpu.features)
    assert torch.equal(on_device.text_features.cpu(), on_cpu.text_features)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_lambda_follows_beta_alpha_alpha(alpha):
    lams = np.array([mixup_draw(alpha, 0, step, 2)[0] for step in range(4000)])
    mean, var = 0.5, 1 / (4 * (2 * alpha + 1))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert abs(lams.mean() - mean) < 4 * np.sqrt(var / len(lams))
    assert abs(lams.var() - var) / var < 0.08
    assert lams.min() >= 0 and lams.max() <= 1


def test_a_step_without_both_cached_sides_or_with_tokens_is_refused():
    b = batch()
    with pytest.raises(LocktuneError, match="no text features; train with model.setting=LL"):
        mix_batch(Batch(None, None, features=b.features), 0.4, 0, 0)
    with pytest.raises(LocktuneError, match="mixes pooled features, but the image side gives tokens"):
        mix_batch(Batch(None, None, features=torch.zeros(8, 3, 6), text_features=b.text_features), 0.4, 0, 0)


@pytest.mark.parametrize("overrides,message", [
    (["train.mixup_alpha=0.5"], r"train.mixup_alpha=0.5 mixes both sides' cached features, but setting 'LU' "
                                r"trains a tower; use model.setting=LL or train.mixup_alpha=0"),
    (["model.setting=LL", "train.mixup_alpha=0.5", "model.image_head=blocks:2"],
     r"mixes pooled features, but model.image_head=blocks:2 reads tokens"),
    (["model.setting=LL", "train.mixup_alpha=0.5", "data.text_cache=false"],
     r"data.text_cache=false runs the text tower"),
    (["model.setting=LL", "train.mixup_alpha=-1"], r"'train.mixup_alpha' must be 0 \(off\) or a finite number > 0"),
])
def test_config_refuses_what_cannot_mix_in_one_line(overrides, message):
    from locktune.config import load_config

    with pytest.raises(LocktuneError, match=message) as error:
        load_config(overrides=overrides)
    assert "\n" not in str(error.value)
    assert load_config(overrides=["model.setting=LL", "train.mixup_alpha=0.5"]).train.mixup_alpha == 0.5


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    from hf_tiny import save_text

    return save_text("bert", tmp_path_factory.mktemp("bert"))


@pytest.mark.slow  # ~30 s on 2 shared cores: three tiny runs, the first filling both caches
def test_ll_with_mixup_and_mlp_heads_resumes_exactly(tmp_path, emoji_pairs, bert, monkeypatch):
    import locktune.train.trainer as trainer
    from locktune.train.trainer import train
    from tiny_configs import tiny_run

    mixed = []

    def counted(batch, *args):
        out = mix_batch(batch, *args)
        mixed.append(out is not batch and not torch.equal(out.text_features, batch.text_features))
        return out

    monkeypatch.setattr(trainer, "mix_batch", counted)

    def run(name, alpha=0.4):
        config = tiny_run(tmp_path / name, steps=4, train={"mixup_alpha": alpha})
        config.model.setting, config.model.text_tower = "LL", f"hf:{bert}"
        config.model.image_head = config.model.text_head = "mlp"
        config.model.head_mlp_width = 32
        return config

    whole = train(run("whole"), pairs=emoji_pairs)
    assert mixed == [True] * 4, "every step trains on mixed cached features"
    first = train(run("split"), pairs=emoji_pairs, stop_after=2)
    assert first.steps_done == 2
    resumed = train(run("split"), pairs=emoji_pairs, resume=True)
    assert resumed.losses == whole.losses
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
