"""A grid of training runs as a config file: a base run config, arms (each a list of config overrides),
seeds, the evaluation suite every arm is judged on, and the paper's findings the grid tests.

    name: towers
    title: Which tower to lock
    base: studies/base.yaml            # a run config (relative to this file, or to configs/)
    overrides: [train.steps=150]       # for every arm
    seeds: [0]                         # for every arm without its own
    suite: ablation
    arms:
      - {name: LU, overrides: [model.setting=LU], seeds: [0, 1, 2]}
      - {name: UU, overrides: [model.setting=UU]}
      - {name: LU-local, overrides: [train.loss=local], processes: 2}
      - {name: UU-late, overrides: [model.setting=UU, train.image_unlock_start=60], smoke: [train.image_unlock_start=1]}
      - {name: LU-10min, overrides: [model.setting=LU], budget_s: 600}   # steps calibrated to 10 minutes
    findings: [lu_beats_uu]
    design: 2                          # the study design its records belong to (2, the only one judged)
    reading:                           # written after the run: why a finding differs from the paper;
      lu_beats_uu: "UU fit its {pairs:UU} training pairs better than LU (loss {metric:UU:ood_loss|train_loss} vs ..."
                                       # every number a placeholder filled in from the records (ablate/readings.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from locktune.config import RunConfig, load_config, read_yaml
from locktune.errors import LocktuneError
from locktune.packaged import find_config

GRID_KEYS = {"name", "title", "description", "base", "overrides", "seeds", "suite", "arms", "findings", "smoke",
             "design", "reading"}
ARM_KEYS = {"name", "overrides", "seeds", "processes", "label", "smoke", "budget_s"}


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    processes: int = 1  # >1: trained under torchrun with this many processes
    label: str = ""  # what the arm means, for the report
    smoke: tuple[str, ...] = ()  # what `--smoke` adds for this arm (e.g. an unlock step within 2 steps)
    budget_s: float = 0.0  # >0: train for this much wall-clock time (steps calibrated once, ablate/budget.py)

    def run_name(self, seed: int) -> str:
        return f"{self.name}-s{seed}"


@dataclass
class Grid:
    name: str
    title: str
    base: Path
    overrides: list[str]
    suite: str
    arms: list[Arm]
    findings: list[str] = field(default_factory=list)
    description: str = ""
    # What `--smoke` adds to every arm (after the grid's own overrides): a few steps on a few pairs.
    smoke: list[str] = field(default_factory=list)
    path: Path | None = None
    # The study design the grid belongs to, carried by its records: 2, the paired-seed studies of
    # configs/studies/ (the first design was retired in round 3, docs/studies/design1.md).
    design: int = 2
    # {finding: one sentence of evidence on why it reads as it does here}, written after the run and
    # printed under the findings table as such; never an input to a verdict.  A template: every
    # number in it is a placeholder filled in from the records when the report is written (ablate/readings.py).
    reading: dict[str, str] = field(default_factory=dict)

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise LocktuneError(f"grid '{self.name}' has no arm '{name}'; its arms: {', '.join(a.name for a in self.arms)}")

    def run_config(self, arm: Arm, seed: int, run_dir: Path, extra: list[str] = ()) -> RunConfig:
        """The arm's full run config: base file, grid overrides, arm overrides, seed, folder, then `extra`."""
        overrides = [*self.overrides, *arm.overrides, f"train.seed={seed}", f"run_dir={run_dir}", *extra]
        try:
            return load_config(self.base, overrides, file_size_for_every_tower=True)  # one size for every arm
        except LocktuneError as error:
            raise LocktuneError(f"grid '{self.name}', arm '{arm.name}': {error}") from None


def _strings(value, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LocktuneError(f"{where} should be a list of strings like [train.steps=100], got {value!r}")
    return list(value)


def _seeds(value, where: str, default: tuple[int, ...]) -> tuple[int, ...]:
    if value is None:
        return default
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise LocktuneError(f"{where} should be a non-empty list of integers like [0, 1, 2], got {value!r}")
    return tuple(value)


def _resolve(path: str, beside: Path) -> Path:
    if (beside / path).is_file():
        return (beside / path).resolve()
    return find_config(path, "base config").resolve()


RETIRED = "ablations/"  # design 1's shipped grids (retired in round 3, docs/studies/design1.md)


def load_grid(path: str | Path) -> Grid:
    if not Path(path).is_file() and str(path).removeprefix("configs/").startswith(RETIRED):
        raise LocktuneError(f"grid file '{path}': the first design's grids ({RETIRED}) were retired in round 3, "
                            "their table archived in docs/studies/design1.md; each of their findings is re-tested "
                            "by a grid in studies/ (e.g. studies/towers_r3.yaml; `locktune ablate --help` lists them)")
    path = find_config(path, "grid file")
    data = read_yaml(path.read_text(), f"grid file '{path}'") or {}
    if not isinstance(data, dict):
        raise LocktuneError(f"grid file '{path}' should hold a mapping (name:, base:, arms:, ...)")
    unknown = set(data) - GRID_KEYS
    if unknown:
        raise LocktuneError(f"grid file '{path}': unknown keys {sorted(unknown)}; valid: {sorted(GRID_KEYS)}")
    for key in ("name", "base", "arms"):
        if key not in data:
            raise LocktuneError(f"grid file '{path}' needs '{key}:'")
    default_seeds = _seeds(data.get("seeds"), f"{path}: seeds", (0,))
    arms, names = [], set()
    if not isinstance(data["arms"], list) or not data["arms"]:
        raise LocktuneError(f"grid file '{path}': arms should be a non-empty list")
    for i, entry in enumerate(data["arms"]):
        where = f"{path}: arms[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise LocktuneError(f"{where} should be a mapping with at least name: and overrides:")
        unknown = set(entry) - ARM_KEYS
        if unknown:
            raise LocktuneError(f"{where}: unknown keys {sorted(unknown)}; valid: {sorted(ARM_KEYS)}")
        name = str(entry["name"])
        if name in names or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise LocktuneError(f"{where}: arm name '{name}' must be unique and use only letters, digits, - _ .")
        names.add(name)
        processes = entry.get("processes", 1)
        if not isinstance(processes, int) or processes < 1:
            raise LocktuneError(f"{where}: processes should be a positive integer, got {processes!r}")
        budget = entry.get("budget_s", 0)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0:
            raise LocktuneError(f"{where}: budget_s should be a number of seconds (> 0), got {budget!r}")
        arms.append(Arm(name, tuple(_strings(entry.get("overrides"), f"{where}.overrides")),
                        _seeds(entry.get("seeds"), f"{where}.seeds", default_seeds), processes,
                        str(entry.get("label", "")), tuple(_strings(entry.get("smoke"), f"{where}.smoke")),
                        float(budget)))
    design = data.get("design", 2)
    if design != 2:
        raise LocktuneError(f"grid file '{path}': design should be 2 (the paired-seed studies), got {design!r}; the "
                            "first design's grids were retired in round 3 (docs/studies/design1.md): start from a "
                            "grid in configs/studies/")
    reading = data.get("reading") or {}
    if not isinstance(reading, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in reading.items()):
        raise LocktuneError(f"grid file '{path}': reading should map finding names to sentences, got {reading!r}")
    stray = set(reading) - set(_strings(data.get("findings"), f"{path}: findings"))
    if stray:
        raise LocktuneError(f"grid file '{path}': reading names {sorted(stray)}, which are not in its findings")
    grid = Grid(name=str(data["name"]), title=str(data.get("title", data["name"])),
                base=_resolve(str(data["base"]), path.parent), overrides=_strings(data.get("overrides"), f"{path}: overrides"),
                suite=str(data.get("suite", "ablation")), arms=arms,
                findings=_strings(data.get("findings"), f"{path}: findings"),
                description=str(data.get("description", "")).strip(),
                smoke=_strings(data.get("smoke"), f"{path}: smoke"), path=path.resolve(), design=design,
                reading={k: " ".join(v.split()) for k, v in reading.items()})
    _check(grid)
    return grid


def _check(grid: Grid) -> None:
    """Fail before any training: every arm's config loads, the suite and the findings exist, the readings are
    templates that name the grid's arms and findings."""
    from locktune.ablate.findings import FINDINGS
    from locktune.ablate.readings import check as check_reading
    from locktune.ablate.runner import SMOKE
    from locktune.eval.suites import SUITES

    SUITES.get(grid.suite)
    for name in grid.findings:
        FINDINGS.get(name)
    for name in grid.reading:
        check_reading(grid, name)
    for arm in grid.arms:
        grid.run_config(arm, arm.seeds[0], Path("runs/check"))
        grid.run_config(arm, arm.seeds[0], Path("runs/check"), [*SMOKE, *grid.smoke, *arm.smoke])
