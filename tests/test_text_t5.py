"""The T5-encoder-style text tower: its Unigram tokenizer on any text, its forward pass, and a tiny
training run whose model reloads (checkpoint and saved-model folder) to the same text embeddings."""

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from locktune.errors import LocktuneError
from locktune.towers.text.base import TextTowerArgs
from locktune.towers.text.t5_encoder import EOS, PAD, T5EncoderTower
from tiny_configs import tiny_run

CORPUS = ["a red apple", "ein roter Apfel", "une pomme rouge", "猫の絵", "🙂 smiling face", "a dog on grass"] * 5
MAX_LEN = 12
TEXTS = ["a red apple", "", "une pomme", "ünïcödé ☃ ✓ 🤖 never seen", "dog " * 40]


def t5_args(**overrides) -> TextTowerArgs:
    values = dict(pretrained=False, max_len=MAX_LEN, width=32, layers=2, heads=2, vocab_size=200,
                  corpus=lambda: CORPUS)
    return TextTowerArgs(**{**values, **overrides})


@pytest.fixture(scope="module")
def tower():
    torch.manual_seed(0)
    return T5EncoderTower(t5_args()).eval()


def test_vocabulary_has_t5_special_tokens(tower):
    vocab = tower.sentencepiece.get_vocab()
    assert (vocab[PAD], vocab[EOS], vocab["<unk>"]) == (0, 1, 2)
    assert 3 < tower.sentencepiece.get_vocab_size() <= 200


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(), max_size=300), min_size=1, max_size=6))
@example(["", "\ud800", "bad \udcff byte", "a red apple"])
def test_tokenizer_takes_any_unicode(tower, texts):
    tokens = tower.tokenize(texts)
    ids, mask = tokens["ids"], tokens["mask"]
    assert ids.shape == mask.shape == (len(texts), MAX_LEN) and ids.dtype == mask.dtype == torch.long
    lengths = mask.sum(1)
    assert bool(((lengths >= 1) & (lengths <= MAX_LEN)).all())  # </s> always there, even for ""
    # The mask is a prefix of ones; </s> ends the real tokens, padding fills the rest.
    assert torch.equal(mask, (torch.arange(MAX_LEN) < lengths[:, None]).long())
    assert bool((ids[torch.arange(len(texts)), lengths - 1] == tower.eos_id).all())
    assert bool((ids[mask == 0] == tower.pad_id).all())
    assert int((ids == tower.eos_id).sum()) == len(texts)  # one </s> per text, none inside the text


def test_empty_text_is_eos_alone_and_long_text_is_truncated(tower):
    ids, mask = tower.tokenize(["", "dog " * 40]).values()
    assert ids[0, 0] == tower.eos_id and mask[0].tolist() == [1] + [0] * (MAX_LEN - 1)
    assert mask[1].sum() == MAX_LEN and ids[1, -1] == tower.eos_id


def test_forward_is_finite_with_output_dim_and_ignores_padding(tower):
    tokens = tower.tokenize(TEXTS)
    with torch.no_grad():
        out = tower(tokens["ids"], tokens["mask"])
        # Masked mean: what the padding ids are must not change the vector.
        ids = tokens["ids"].clone()
        ids[tokens["mask"] == 0] = 5
        again = tower(ids, tokens["mask"])
    assert tower.output_dim == 32 and out.shape == (len(TEXTS), 32) and torch.isfinite(out).all()
    torch.testing.assert_close(out, again)
    assert not torch.allclose(out[0], out[2])


def test_masked_mean_matches_an_independent_computation(tower):
    tokens = tower.tokenize(["a red apple on the grass"])
    length = int(tokens["mask"].sum())
    with torch.no_grad():
        pooled = tower(tokens["ids"], tokens["mask"])
        # Relative positions only: the real tokens alone, unpadded, must give the same hidden states.
        alone = tower.encoder(input_ids=tokens["ids"][:, :length]).last_hidden_state.mean(1)
    torch.testing.assert_close(pooled, alone, atol=1e-5, rtol=1e-5)


def test_t5_v11_shape(tower):
    config = tower.encoder.config
    assert (config.d_model, config.num_layers, config.num_heads, config.d_kv) == (32, 2, 2, 16)
    assert config.is_gated_act and config.dense_act_fn == "gelu_new" and config.dropout_rate == 0.0
    assert config.vocab_size == tower.sentencepiece.get_vocab_size()


def test_tokenizer_survives_json_round_trip(tower):
    restored = T5EncoderTower(t5_args(corpus=None, tokenizer_json=tower.tokenizer_json()))
    assert restored.tokenizer_json() == tower.tokenizer_json()
    for key, value in tower.tokenize(TEXTS).items():
        assert torch.equal(restored.tokenize(TEXTS)[key], value)


def test_without_captions_or_saved_tokenizer_is_a_clear_error():
    with pytest.raises(LocktuneError, match="needs training captions"):
        T5EncoderTower(t5_args(corpus=None))


@pytest.mark.parametrize("setting", ["LU", "LL"])
def test_pretrained_letters_are_a_clear_error(setting):
    from locktune.config import ModelConfig
    from locktune.model import build_model

    with pytest.raises(LocktuneError, match="'t5_encoder' has no pretrained weights.*letter 'u'.*'Lu'"):
        T5EncoderTower(t5_args(pretrained=True))
    config = ModelConfig(setting=setting, text_tower="t5_encoder", image_tower="mobilenet_v2", image_size=64,
                         text_width=32, text_layers=1, text_heads=2, text_vocab_size=200)
    with pytest.raises(LocktuneError, match="no pretrained weights"):
        build_model(config, corpus=lambda: CORPUS)


def test_tiny_training_reloads_to_identical_text_embeddings(tmp_path, emoji_pairs):
    import locktune
    from locktune.api import LitModel
    from locktune.saved_model import load_any
    from locktune.train.trainer import train

    config = tiny_run(tmp_path / "run", steps=3, text_layers=2)
    config.model.text_tower, config.model.setting = "t5_encoder", "Lu"
    result = train(config, pairs=emoji_pairs)
    assert result.steps_done == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    trained = result.model.eval()
    tokens = trained.tokenize(TEXTS)
    with torch.no_grad():
        expected = trained.encode_text(tokens["ids"], tokens["mask"])

    reloaded = load_any(tmp_path / "run")
    assert reloaded.text_tower.tokenizer_json() == trained.text_tower.tokenizer_json()
    with torch.no_grad():
        assert torch.equal(reloaded.encode_text(**reloaded.tokenize(TEXTS)), expected)

    folder = LitModel(reloaded).save(tmp_path / "saved")
    with torch.no_grad():
        from_folder = locktune.load(folder).net
        assert torch.equal(from_folder.encode_text(**from_folder.tokenize(TEXTS)), expected)
