"""Plan an isoFLOP sweep: (model size, token budget) pairs per compute budget, as trainer configs.

For each compute budget C the sweep trains several model sizes N for D = C / (6 N) tokens.
Sizes come from either

* `presets` -- the family's published shapes (the SIMS setting: warm-start each from its
  converted text LM with `init_from`), skipping pairs whose tokens per parameter or step
  count are out of range; or
* `ladder` -- shapes built from the family's shape rules (head dim, GQA ratio, MLP ratio,
  aspect ratio of the nearest preset), sizes log-spaced around the N_opt(C) that a prior law
  predicts: what Chinchilla's approach 2 needs (the loss minimum inside each set).

Each run is a `pretrain_slm.py` YAML config: the base config, the shape, `train.token_budget`
(the cosine LR schedule and warmup fraction then span exactly that budget) and its own
`checkpoint.save`. A SLURM array script runs line i of configs.txt as task i; resubmitting it
resumes unfinished runs (the trainer resumes from `checkpoint.save`).
"""
from __future__ import annotations

import copy
import csv
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import yaml

from megatron_slm.config import ConfigError, apply_override, from_dict
from megatron_slm.models.flops import param_counts
from megatron_slm.models.arch import ModelArch
from megatron_slm.models.presets import FAMILIES, PRESETS, trained_arch
from megatron_slm.scaling.fit import LossLaw

SHAPE_KEYS = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups", "kv_channels")


class PlanError(ValueError):
    """A sweep that cannot be planned as asked; the message says which option to change."""


@dataclass(frozen=True)
class Shape:
    preset: str  # the preset whose non-shape fields (vocab, rope, bias, tying) the run uses
    arch: ModelArch  # with speech units: what the trained model holds

    @property
    def overrides(self) -> dict:
        base = PRESETS[self.preset]
        return {k: getattr(self.arch, k) for k in SHAPE_KEYS if getattr(self.arch, k) != getattr(base, k)}

    def params(self, which: str) -> int:
        counts = param_counts(self.arch)
        return counts.total if which == "total" else counts.non_embedding


@dataclass
class PlannedRun:
    name: str
    budget: float
    shape: Shape
    params: int  # the N that C = 6 N D uses (total or non-embedding, see `Plan.params`)
    tokens: int
    steps: int
    config: dict = field(repr=False)


@dataclass
class Plan:
    runs: list[PlannedRun]
    skipped: list[tuple[str, str]]  # (what, why)
    params: str


def family_presets(family: Optional[str], presets: Sequence[str] = ()) -> list[str]:
    if presets:
        unknown = [p for p in presets if p not in PRESETS]
        if unknown:
            raise PlanError(f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(sorted(PRESETS))}")
        return list(presets)
    if family not in FAMILIES:
        raise PlanError(f"unknown family {family!r}; known: {', '.join(sorted(FAMILIES))} (or pass --presets)")
    return list(FAMILIES[family])


def _nearest(names: Sequence[str], n: float, arch_of: Callable[[str], ModelArch]) -> str:
    size = {p: param_counts(arch_of(p)).total for p in names}
    return min(names, key=lambda p: abs(math.log(size[p] / n)))


def ladder_shapes(presets: Sequence[str], targets: Sequence[float], arch_of: Callable[[str], ModelArch],
                  which: str, tp: int = 1, max_layers: int = 96) -> list[Shape]:
    """One shape per target size, following the shape rules of the nearest family preset.

    Head dim, query heads per KV group and MLP ratio are the preset's; among candidate
    (layers, heads) pairs within 10% of the target the aspect ratio hidden/layers closest
    to the preset's wins (the loss is flat in aspect ratio over a wide range, Kaplan 2020),
    else the candidate nearest in size. Head and KV-group counts are multiples of `tp`.
    """
    shapes = []
    for target in targets:
        name = _nearest(presets, target, arch_of)
        base = arch_of(name)
        q_per_group = base.num_attention_heads // base.num_query_groups
        ffn_ratio = base.ffn_hidden_size / base.hidden_size
        aspect = math.log(base.hidden_size / base.num_layers)
        best, best_key = None, None
        for heads in range(1, 4 * base.num_attention_heads + 1):
            # tensor parallelism splits heads and KV groups: both multiples of tp; among those
            # the group count closest to the preset's queries per group
            divisors = [g for g in range(tp, heads + 1, tp) if heads % g == 0]
            if heads % tp or not divisors:
                continue
            groups = min(divisors, key=lambda g: abs(math.log(heads / g / q_per_group)))
            hidden = heads * base.head_dim
            ffn = max(64, int(round(ffn_ratio * hidden / 64)) * 64)
            for layers in range(2, max_layers + 1):
                arch = base.replace(num_layers=layers, hidden_size=hidden, ffn_hidden_size=ffn,
                                    num_attention_heads=heads, num_query_groups=groups, kv_channels=base.head_dim)
                n = param_counts(arch)
                miss = abs(math.log((n.total if which == "total" else n.non_embedding) / target))
                close = miss <= math.log(1.1)
                key = (not close, abs(math.log(hidden / layers) - aspect) if close else miss)
                if best_key is None or key < best_key:
                    best, best_key = arch, key
        shapes.append(Shape(name, best))
    return shapes


def _tokenizer_vocab_size(template) -> Optional[int]:
    """The vocabulary a preset run builds from `data.tokenizer` (text + units + 2), as the trainer
    does; None without real data or a tokenizer (the preset's own vocabulary then counts)."""
    if template.data.source == "synthetic" or not template.data.tokenizer or template.model.vocab_size:
        return None
    from megatron_slm.vocab import SpeechVocab, VocabError

    try:
        return SpeechVocab.from_pretrained(template.data.tokenizer, num_units=template.data.num_units).vocab_size
    except (OSError, VocabError) as e:
        raise PlanError(f"base config data.tokenizer={template.data.tokenizer!r}: {e}") from None


def _init_arch(init_from: str, preset: str, planned: ModelArch) -> ModelArch:
    """A run that starts from a converted checkpoint trains *its* architecture: count that one,
    and refuse a checkpoint whose shape is not the preset's (its runs would be mislabelled)."""
    from megatron_slm.models.record import has_model_record, read_model_record

    source = Path(init_from.format(preset=preset))
    if not has_model_record(source):
        return planned  # not converted yet: the preset's shape is the plan
    try:
        arch = read_model_record(source).arch
    except ConfigError as e:
        raise PlanError(f"--init-from: {e}") from None
    differ = [f"{k} {getattr(arch, k)} != {getattr(planned, k)}" for k in (*SHAPE_KEYS[:-1], "vocab_size")
              if getattr(arch, k) != getattr(planned, k)]
    if arch.head_dim != planned.head_dim:
        differ.append(f"head dim {arch.head_dim} != {planned.head_dim}")
    if differ:
        raise PlanError(f"--init-from {source} is not preset {preset!r} with this vocabulary: {', '.join(differ)}")
    return arch


def _size_label(n: float) -> str:
    for unit, scale in (("b", 1e9), ("m", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}".replace(".", "p")
    return f"{int(n)}"


def _budget_label(c: float) -> str:
    mantissa, exponent = f"{c:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}".replace(".", "p")


def make_plan(*, budgets: Sequence[float], family: Optional[str] = None, presets: Sequence[str] = (),
              sizes: Literal["ladder", "presets"] = "ladder", sizes_per_budget: int = 7, span: float = 4.0,
              prior: LossLaw, params: Literal["total", "non_embedding"] = "total",
              base_config: Optional[dict] = None, overrides: Sequence[str] = (), runs_dir: str | Path,
              init_from: Optional[str] = None, min_tokens_per_param: float = 0.5,
              max_tokens_per_param: float = 2000.0, min_steps: int = 100) -> Plan:
    """Build every run's config (validated against the trainer's schema); nothing is written."""
    if not budgets:
        raise PlanError("--budgets: give at least one compute budget (FLOPs), e.g. 1e19,3e19,1e20")
    if any(not (c > 0 and math.isfinite(c)) for c in budgets):
        raise PlanError(f"--budgets: every budget must be a positive number, got {list(budgets)}")
    if sizes == "ladder" and sizes_per_budget < 3:
        raise PlanError("--sizes-per-budget must be at least 3 (a parabola per isoFLOP set needs 3 sizes)")
    if init_from and sizes != "presets":
        raise PlanError("--init-from needs --sizes presets (ladder shapes have no pre-trained checkpoint)")
    names = family_presets(family, presets)
    base = copy.deepcopy(base_config or {})
    for assignment in overrides:
        apply_override(base, assignment)
    try:
        template = from_dict(base)
    except ConfigError as e:
        raise PlanError(f"base config: {e}") from None
    vocab_size = _tokenizer_vocab_size(template)
    arch_of = lambda preset: trained_arch(preset, template, vocab_size)  # noqa: E731
    tokens_per_step = template.train.global_batch_size * template.train.seq_length
    runs_dir = Path(runs_dir).resolve()

    runs, skipped = [], []
    for c in sorted(set(float(b) for b in budgets)):
        if sizes == "presets":
            shapes = [Shape(p, _init_arch(init_from, p, arch_of(p)) if init_from else arch_of(p)) for p in names]
        else:
            n_opt = float(prior.optimal(c)[0])
            shapes = ladder_shapes(names, n_opt * np.geomspace(1 / span, span, sizes_per_budget), arch_of, params,
                                   tp=template.parallel.tp)
        seen = set()
        for shape in shapes:
            n = shape.params(params)
            label = shape.preset if sizes == "presets" else f"n{_size_label(n)}"
            name = f"c{_budget_label(c)}-{label}"
            if name in seen:  # two targets rounded to the same shape
                skipped.append((name, "same shape as another size of this set (the family has no shape in between)"))
                continue
            seen.add(name)
            tokens = c / (6 * n)
            steps = math.ceil(tokens / tokens_per_step)
            why = None
            if tokens / n < min_tokens_per_param:
                why = f"{tokens / n:.2g} tokens/param < --min-tokens-per-param {min_tokens_per_param:g}"
            elif tokens / n > max_tokens_per_param:
                why = f"{tokens / n:.3g} tokens/param > --max-tokens-per-param {max_tokens_per_param:g}"
            elif steps < min_steps:
                why = f"{steps} steps < --min-steps {min_steps} (lower train.global_batch_size or raise the budget)"
            if why:
                skipped.append((name, why))
                continue
            cfg = copy.deepcopy(base)
            model = cfg.setdefault("model", {})
            if init_from:
                model.pop("preset", None)
                model["from"] = init_from.format(preset=shape.preset)
            else:
                model["preset"] = shape.preset
                model.update(shape.overrides)
            train = cfg.setdefault("train", {})
            train["token_budget"] = float(round(tokens))
            train.pop("iters", None)
            cfg.setdefault("checkpoint", {})["save"] = str(runs_dir / name)
            try:
                from_dict(cfg)
            except ConfigError as e:
                raise PlanError(f"run {name}: {e}") from None
            runs.append(PlannedRun(name, c, shape, n, int(round(tokens)), steps, cfg))
    if not runs:
        raise PlanError("no run fits the limits; skipped: " + "; ".join(f"{n}: {w}" for n, w in skipped))
    return Plan(runs, skipped, params)


PLAN_COLUMNS = ("run", "budget", "preset", *SHAPE_KEYS, "params", "params_kind", "tokens", "steps", "config", "save")


def write_plan(plan: Plan, out: str | Path, nodes: int = 1, gpus_per_node: int = 8,
               time: str = "24:00:00", partition: Optional[str] = None, account: Optional[str] = None,
               max_parallel: Optional[int] = None) -> dict[str, Path]:
    """configs/<run>.yaml, configs.txt (array index -> config), plan.csv, submit.sbatch."""
    out = Path(out).resolve()
    (out / "configs").mkdir(parents=True, exist_ok=True)
    config_paths = []
    for run in plan.runs:
        path = out / "configs" / f"{run.name}.yaml"
        path.write_text(yaml.safe_dump(run.config, sort_keys=False))
        config_paths.append(path)
    (out / "configs.txt").write_text("".join(f"{p}\n" for p in config_paths))
    with (out / "plan.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PLAN_COLUMNS)
        for run, path in zip(plan.runs, config_paths):
            shape = [getattr(run.shape.arch, k) if k != "kv_channels" else run.shape.arch.head_dim for k in SHAPE_KEYS]
            w.writerow([run.name, repr(run.budget), run.shape.preset, *shape, run.params, plan.params, run.tokens,
                        run.steps, str(path), run.config["checkpoint"]["save"]])
    script = out / "submit.sbatch"
    script.write_text(slurm_script(len(plan.runs), out, nodes, gpus_per_node, time, partition,
                                   account, max_parallel))
    script.chmod(0o755)
    return {"configs": out / "configs", "configs_txt": out / "configs.txt", "plan_csv": out / "plan.csv",
            "sbatch": script}


def slurm_script(n: int, out: Path, nodes: int, gpus_per_node: int, time: str,
                 partition: Optional[str], account: Optional[str], max_parallel: Optional[int]) -> str:
    array = f"0-{n - 1}" + (f"%{max_parallel}" if max_parallel else "")
    extra = "".join(f"#SBATCH --{k}={v}\n" for k, v in (("partition", partition), ("account", account)) if v)
    q = shlex.quote
    return f"""#!/bin/bash
# isoFLOP sweep: task i trains line i+1 of configs.txt. Submit: sbatch {out / 'submit.sbatch'}
# Resubmitting resumes unfinished runs from their checkpoint.save directory.
#SBATCH --job-name=slm-sweep
#SBATCH --array={array}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --time={time}
#SBATCH --output={out / 'logs'}/%A_%a.out
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
{extra}set -euo pipefail
mkdir -p {q(str(out / 'logs'))}
# the launcher (tools/launch.py): multi-node torchrun from the SLURM variables, checkpoint on
# SIGUSR1 and requeue, finished runs exit at once (see examples/slurm/sweep.sbatch, docs/slurm.md).
exec "${{PYTHON:-python}}" -m megatron_slm.commands.launch --srun \\
    --config-list {q(str(out / 'configs.txt'))}
"""


def read_plan_budgets(path: str | Path) -> dict[str, float]:
    """run name -> planned budget, from a plan.csv (collect uses it to label isoFLOP sets)."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"{path}: plan file does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"run", "budget"} - set(reader.fieldnames or ())
        if missing:
            raise PlanError(f"{path}: missing column {', '.join(sorted(missing))}")
        out = {}
        for i, row in enumerate(reader, 1):
            try:
                out[row["run"]] = float(row["budget"])
            except ValueError:
                raise PlanError(f"{path} row {i}: budget {row['budget']!r} is not a number") from None
    return out
