"""The evaluators, one file each: importing this package registers them (and how their results are
reported).  The import order is the order of the tables and of the ablation summary columns."""

from locktune.eval.evaluators import zero_shot, retrieval, fewshot, ood_loss, multilingual, validation, probe_share  # noqa: F401
