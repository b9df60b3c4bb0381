"""`hf:ID_OR_FOLDER` text towers: any encoder that AutoModel + AutoTokenizer load.

BERT, RoBERTa, XLM-R, DistilBERT, DeBERTa, ELECTRA...; T5 / mT5 / UMT5 through their encoder only; the
text half of a CLIP / SigLIP checkpoint; sentence-transformers folders (their Transformer module's folder
and their pooling config).  The text vector is chosen by `model.text_pool`:

    auto    the sentence-transformers pooling where the folder has one, the model's own pooled output
            for CLIP/SigLIP text models, else the mean
    mean    the mean of the last hidden states over real tokens
    cls     the first token's last hidden state
    eos     the last real token's last hidden state (causal and CLIP-style models)
    pooler  the model's pooled output (BERT's tanh pooler, CLIP's end-of-text token)

`u` keeps the architecture and the tokenizer but starts from random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from locktune.errors import LocktuneError
from locktune.towers.hf_common import (ENCODER_ONLY, build_random, freeze_unused, from_pretrained, hf_quiet,
                                      load_config, model_class, plain_mode_switch)
from locktune.towers.hub import folder_fingerprint, read_json, require_config, resolve_model
from locktune.towers.text.base import TEXT_TOWER_KINDS, TextTower, TextTowerArgs, encodable

# One of these must be there: transformers would otherwise build an empty vocabulary without a word.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                   "tokenizer.model", "spm.model", "tokenizer_config.json")
TEXT_POOLS = ("auto", "mean", "cls", "eos", "pooler")
SAVED_OPTIONS = "locktune_tower.json"
# sentence-transformers pooling modes -> ours; anything else (max, weighted mean, several) is refused.
ST_POOLS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "eos"}
POOLED_BY_DEFAULT = ("clip_text_model", "siglip_text_model", "siglip2_text_model", "clip", "siglip")


def sentence_transformers_layout(folder: Path, what: str) -> tuple[Path, str | LocktuneError | None]:
    """(the folder holding the transformer, the pooling its modules.json asks for, or the error to raise if
    that pooling is used) — (folder, None) when `folder` is a plain transformers folder."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return folder, None
    try:
        modules = json.loads(modules_file.read_text())
    except json.JSONDecodeError as error:
        raise LocktuneError(f"{what}: '{modules_file}' is not valid JSON ({error})")
    model_folder, pool = folder, None
    for module in modules if isinstance(modules, list) else []:
        kind, path = str(module.get("type", "")), folder / str(module.get("path", ""))
        if kind.endswith(".Transformer"):
            model_folder = path
        elif kind.endswith(".Pooling"):
            config = read_json(path / "config.json", what) if (path / "config.json").is_file() else {}
            chosen = [ours for key, ours in ST_POOLS.items() if config.get(key)]
            others = [k for k, v in config.items() if k.startswith("pooling_mode") and v and k not in ST_POOLS]
            if len(chosen) != 1 or others:
                # Raised only if the user leaves the choice to the folder (model.text_pool=auto).
                pool = LocktuneError(f"{what}: its sentence-transformers pooling ({path / 'config.json'}) combines "
                                     f"{', '.join(chosen + others) or 'no modes'}; locktune pools one way: set "
                                     f"model.text_pool to one of {', '.join(TEXT_POOLS[1:])}")
            else:
                pool = chosen[0]
    return model_folder, pool


class HFTextTower(TextTower):
    def __init__(self, spec: str, args: TextTowerArgs, name: str | None = None):
        super().__init__()
        self.name = name or f"hf:{spec}"
        what = f"text tower '{self.name}'"
        self.max_len = args.max_len
        st_pool, options = None, {}
        if args.saved is not None:
            folder = Path(args.saved)
            if (folder / SAVED_OPTIONS).is_file():
                options = read_json(folder / SAVED_OPTIONS, what)
            self.fingerprint_ = options.get("weights", "random")
        else:
            source = resolve_model(spec, what)
            folder, st_pool = sentence_transformers_layout(source.folder, what)
            require_config(folder, what)
            self.fingerprint_ = folder_fingerprint(folder) if args.pretrained else "random"
        config = load_config(folder, what, part="text")
        cls = model_class(config, what, want="text")
        self.hf_tokenizer = self._tokenizer(folder, what)
        hf_quiet()
        pretrained = args.pretrained and args.saved is None
        model, missing = (self._load(cls, folder, config, what) if pretrained
                          else (build_random(cls, config, what, folder), []))
        self.encoder_only = config.model_type in ENCODER_ONLY
        # T5EncoderModel names its embedding twice (shared, encoder.embed_tokens): keep the stack alone.
        self.encoder = plain_mode_switch(model.encoder if self.encoder_only else model)
        requested = options.get("pool") or args.pool
        self.pool = self._resolve_pool(requested, st_pool, config, missing, what)
        self.pool_reason = _pool_reason(requested, self.pool, st_pool)
        # A trained pooled output this tower could pool with (model.text_pool=pooler): a pooler whose weights the
        # checkpoint holds (or that trains from scratch), or a CLIP/SigLIP text model's own.
        trained_pooler = getattr(self.encoder, "pooler", None) is not None and not any(
            "pooler" in k.split(".") for k in missing)
        self.has_pooler = not self.encoder_only and (config.model_type in POOLED_BY_DEFAULT or trained_pooler)
        if self.pool != "pooler" and getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # unused weights would get no gradients (and DDP would complain)
        self.output_dim = int(getattr(config, "d_model", 0) or config.hidden_size)
        tokens = self.tokenize(["a"])
        self.unused = freeze_unused(self, lambda: self(tokens["ids"], tokens["mask"]))

    @staticmethod
    def _tokenizer(folder: Path, what: str):
        from transformers import AutoTokenizer

        hf_quiet()
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise LocktuneError(f"{what}: '{folder}' holds no tokenizer files ({', '.join(TOKENIZER_FILES[:4])}, ...); "
                                "save the tokenizer beside the model (tokenizer.save_pretrained(FOLDER))")
        try:
            return AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise LocktuneError(f"{what}: no tokenizer loads from '{folder}' ({str(error).splitlines()[0][:160]}); "
                                "save the tokenizer beside the model (tokenizer.save_pretrained(FOLDER))") from None

    @staticmethod
    def _load(cls, folder: Path, config, what: str):
        model, info = from_pretrained(cls, folder, config, what)
        missing = list(info.get("missing_keys", []))
        real = [k for k in missing if "pooler" not in k.split(".")]
        if real:
            raise LocktuneError(f"{what}: '{folder}' holds no weights for {len(real)} parameters (e.g. "
                                f"{', '.join(sorted(real)[:3])}); it is another architecture's checkpoint")
        return model, missing

    def _resolve_pool(self, pool: str, st_pool: str | None, config, missing: list[str], what: str) -> str:
        if pool not in TEXT_POOLS:
            raise LocktuneError(f"model.text_pool '{pool}' is not one of {', '.join(TEXT_POOLS)}")
        untrained_pooler = any("pooler" in k.split(".") for k in missing)
        if pool == "auto":
            if isinstance(st_pool, LocktuneError):
                raise st_pool
            if st_pool is not None:
                return st_pool
            return "pooler" if config.model_type in POOLED_BY_DEFAULT else "mean"
        if pool == "pooler":
            if self.encoder_only or not hasattr(self.encoder, "pooler") and config.model_type not in POOLED_BY_DEFAULT:
                raise LocktuneError(f"{what} ({config.model_type}) has no pooled output; use model.text_pool=mean, "
                                    "cls or eos")
            if untrained_pooler:
                raise LocktuneError(f"{what}: the checkpoint holds no weights for its pooler; use model.text_pool=mean "
                                    "or cls")
        return pool

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.hf_tokenizer(encodable(texts), padding="max_length", truncation=True, max_length=self.max_len,
                                  return_tensors="pt")
        return {"ids": batch["input_ids"], "mask": batch["attention_mask"]}

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=ids, attention_mask=mask)
        if self.pool == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pool == "cls":
            return hidden[:, 0]
        if self.pool == "eos":
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), mask.sum(1) - 1]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def enable_grad_checkpointing(self) -> None:
        # Non-reentrant: works with frozen inputs (embeddings) and replays dropout with the saved RNG states.
        self.encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def weights_fingerprint(self) -> str:
        return self.fingerprint_

    def save_architecture(self, folder: Path) -> dict:
        """Tokenizer files, the architecture's config and the pooling: rebuilds it offline (weights are
        saved with the rest of the model)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.hf_tokenizer.save_pretrained(folder)
        self.encoder.config.save_pretrained(folder)
        options = {"pool": self.pool, "weights": self.fingerprint_}
        (folder / SAVED_OPTIONS).write_text(json.dumps(options, indent=1))
        return options


def _pool_reason(requested: str, pool: str, st_pool) -> str:
    """Why `auto` chose what it chose, as `train` and `locktune towers` print it.  `auto` never picks a BERT-style
    pooler: it was trained for next-sentence prediction (or, in sentence-transformers models such as MiniLM, not
    at all for similarity), and those models are trained and evaluated with their mean.  Only CLIP/SigLIP text
    models, whose pooled output is what their contrastive training embedded, get `pooler` (and so export to
    transformers' dual encoder as they are)."""
    if requested != "auto":
        return "model.text_pool"
    if st_pool is not None:
        return "auto: its sentence-transformers pooling, what it was trained for similarity with; its pooler was not"
    if pool == "pooler":
        return "auto: the pooled output its contrastive training embedded"
    return "auto: a BERT-style pooler is trained for next-sentence prediction, not similarity"


TEXT_TOWER_KINDS.register("hf")(HFTextTower)
