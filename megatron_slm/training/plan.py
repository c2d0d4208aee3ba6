"""Resolve a config into a concrete run plan and check it before anything heavy starts.

Everything that can be wrong with a config -- divisibility of the layout, batch arithmetic,
FP8 without Transformer Engine, missing data files -- is reported here as a `ConfigError`
naming the key, on every rank, before process groups or models exist.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from megatron_slm.config import ConfigError, SLMConfig
from megatron_slm.models.arch import ModelArch
from megatron_slm.models.provider import resolve_arch, resolve_padded_vocab, te_available, use_te_spec
from megatron_slm.models.spec import ModelSpec


@dataclass
class RunPlan:
    cfg: SLMConfig
    arch: ModelArch
    padded_vocab: int
    world_size: int
    dp: int
    num_microbatches: int
    total_steps: int
    tokenizer_dir: Optional[str]
    on_cuda: bool
    units: Optional[dict] = None  # the speech units of the blend (what unit ids mean), when known

    @property
    def model(self) -> ModelSpec:
        """What the model builder needs of this run (architecture, layout, precision, layer spec)."""
        return ModelSpec.from_config(self.cfg, self.arch, self.padded_vocab)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.train.global_batch_size * self.cfg.train.seq_length


def tokenizer_dir(cfg: SLMConfig) -> Optional[str]:
    if cfg.data.tokenizer:
        return cfg.data.tokenizer
    for base in (cfg.model.from_, cfg.checkpoint.load, cfg.checkpoint.save):
        if base and (Path(base) / "tokenizer").is_dir():
            return str(Path(base) / "tokenizer")
    return None


def load_vocab(cfg: SLMConfig, directory: Optional[str]):
    if directory is None:
        return None
    from megatron_slm.vocab import SpeechVocab

    if not Path(directory).exists():
        raise ConfigError(f"data.tokenizer={directory!r} does not exist")
    try:
        return SpeechVocab.from_pretrained(directory, num_units=cfg.data.num_units)
    except (OSError, ValueError) as e:
        raise ConfigError(f"data.tokenizer={directory!r}: {e}") from None


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def planned_steps(cfg: SLMConfig) -> int:
    """Optimizer steps of the whole run: `train.iters`, or the token budget in whole steps."""
    t = cfg.train
    _check((t.iters is None) != (t.token_budget is None), "set exactly one of train.iters and train.token_budget")
    if t.iters is not None:
        _check(t.iters >= 0, "train.iters must be >= 0")
        return t.iters
    _check(t.token_budget > 0, "train.token_budget must be > 0")
    return math.ceil(t.token_budget / (t.global_batch_size * t.seq_length))


def blend_prefixes(cfg: SLMConfig) -> list[str]:
    return [e.path[:-4] if e.path.endswith((".bin", ".idx")) else e.path for e in cfg.data.blend]


def check_blend(cfg: SLMConfig, vocab) -> Optional[dict]:
    """Every dataset is complete, of the kind the blend says and made with this vocabulary, and
    all speech data shares one unit inventory (returned). Sidecars only: no model exists yet."""
    from megatron_slm.data.storage import DatasetError, check_conventions, check_stored, units_identity_of

    prefixes = blend_prefixes(cfg)
    for i, (entry, prefix) in enumerate(zip(cfg.data.blend, prefixes)):
        try:
            meta, kind = check_stored(prefix, vocab, entry.kind)
        except DatasetError as e:
            raise ConfigError(f"data.blend[{i}]: {e}") from None
        if cfg.data.mode == "dynamic" and kind == "interleaved" and (meta or {}).get("mode") != "dynamic":
            raise ConfigError(f"data.blend[{i}]: data.mode=dynamic but {prefix} was preprocessed in static mode "
                              f"(re-run tools/preprocess_data.py interleaved --mode dynamic)")
    try:
        check_conventions(prefixes, cfg.data.interleave)
        return units_identity_of(prefixes)
    except DatasetError as e:
        raise ConfigError(f"data.blend: {e}") from None


def check_model_vocabulary(cfg: SLMConfig, arch: ModelArch, vocab, units: Optional[dict]) -> None:
    """The tokenizer (and the data's units) must be the ones the checkpoint's ids were made for:
    otherwise unit and marker ids land on other rows and training silently learns nonsense."""
    from megatron_slm.checkpoint.layout import has_checkpoint
    from megatron_slm.models.record import read_identity
    from megatron_slm.data.storage import dataset_identity
    from megatron_slm.unit_identity import IdentityError, check_ids
    from megatron_slm.models.provider import arch_source_dir

    c = cfg.checkpoint
    source = c.save if has_checkpoint(c.save) else (c.load or arch_source_dir(cfg))
    if source is None:
        return
    recorded = read_identity(source)
    if recorded and recorded.get("vocab"):
        try:
            check_ids(recorded, dataset_identity(vocab, units), f"the checkpoint {source}", "this run's tokenizer and data")
        except IdentityError as e:
            raise ConfigError(f"data.tokenizer={vocab.source!r} (K={vocab.num_units}) does not fit: {e}") from None
    elif arch.vocab_size != vocab.vocab_size:
        raise ConfigError(f"data.tokenizer={vocab.source!r} has {vocab.vocab_size} ids (K={vocab.num_units} units) but "
                          f"the model in {source} has a vocabulary of {arch.vocab_size}")


def recorded_units(cfg: SLMConfig) -> Optional[dict]:
    """The units the run's starting checkpoint already records (kept when this blend has no speech)."""
    from megatron_slm.models.record import read_identity
    from megatron_slm.models.provider import arch_source_dir

    for source in (cfg.checkpoint.save, cfg.checkpoint.load, arch_source_dir(cfg)):
        if source and Path(source).is_dir():
            units = (read_identity(source) or {}).get("units")
            if units:
                return units
    return None


def check_checkpoint_arch(cfg: SLMConfig, arch: ModelArch) -> None:
    """The checkpoint this run resumes or loads must hold the architecture the config asks for:
    caught here, naming the fields, not as a shape mismatch deep in the checkpoint loader."""
    import dataclasses

    from megatron_slm.checkpoint.layout import has_checkpoint
    from megatron_slm.config import CheckpointConfig, ModelConfig

    c = cfg.checkpoint
    source = c.save if has_checkpoint(c.save) else c.load
    if source is None:
        return
    # the recorded architecture alone: no preset, no overrides, only this checkpoint to read it from
    bare = dataclasses.replace(cfg, model=ModelConfig(), checkpoint=CheckpointConfig(load=source))
    try:
        recorded, _ = resolve_arch(bare)
    except ConfigError:
        return  # records no architecture: a plain dist checkpoint, checked when it loads
    diff = [f"{f.name} {getattr(recorded, f.name)!r} -> {getattr(arch, f.name)!r}"
            for f in dataclasses.fields(arch) if getattr(recorded, f.name) != getattr(arch, f.name)]
    if diff:
        key = "checkpoint.save" if source == c.save else "checkpoint.load"
        raise ConfigError(f"{key}={source} holds another architecture than this config's model: "
                          f"{'; '.join(diff)} (set model.* to the checkpoint's, or drop the preset to take it "
                          f"from the checkpoint)")


def check_benchmarks(cfg: SLMConfig, vocab) -> None:
    """Every benchmark in eval.tasks exists, parses and fits the vocabulary before step 0, not at
    the first evaluation after hours of training."""
    from megatron_slm.eval.hook import load_training_benchmarks
    from megatron_slm.eval.items import ItemError

    try:
        load_training_benchmarks(cfg, vocab)
    except ItemError as e:
        raise ConfigError(f"eval.tasks: {e}") from None


def make_plan(cfg: SLMConfig, world_size: int, on_cuda: bool, vocab=None) -> RunPlan:
    from megatron_slm.training.relaunch import check_relaunch

    p, t, prec = cfg.parallel, cfg.train, cfg.precision
    check_relaunch(cfg)  # a run dir with a checkpoint: only keys that change no result may differ
    arch, pinned = resolve_arch(cfg, vocab.vocab_size if vocab is not None else None)
    check_checkpoint_arch(cfg, arch)
    _check(p.tp >= 1 and p.pp >= 1, "parallel.tp and parallel.pp must be >= 1")
    _check(arch.num_query_groups % p.tp == 0,
           f"parallel.tp={p.tp} does not divide num_query_groups={arch.num_query_groups}")
    _check(arch.num_attention_heads % p.tp == 0,
           f"parallel.tp={p.tp} does not divide num_attention_heads={arch.num_attention_heads}")
    stages = p.pp * (p.vpp or 1)
    _check(arch.num_layers % stages == 0,
           f"num_layers={arch.num_layers} is not divisible by parallel.pp={p.pp}" +
           (f" x parallel.vpp={p.vpp}" if p.vpp else ""))
    if p.vpp is not None:
        _check(p.pp > 1, "parallel.vpp needs parallel.pp > 1")
    _check(world_size % (p.tp * p.pp) == 0,
           f"world size {world_size} is not divisible by parallel.tp={p.tp} x parallel.pp={p.pp}")
    dp = world_size // (p.tp * p.pp)
    _check(t.micro_batch_size >= 1, "train.micro_batch_size must be >= 1")
    _check(t.global_batch_size % (t.micro_batch_size * dp) == 0,
           f"train.global_batch_size={t.global_batch_size} is not divisible by "
           f"train.micro_batch_size={t.micro_batch_size} x data-parallel size {dp}")
    num_microbatches = t.global_batch_size // (t.micro_batch_size * dp)
    if p.vpp is not None:
        _check(num_microbatches % p.pp == 0,
               f"interleaved pipelining needs microbatches per step ({num_microbatches}) divisible by parallel.pp={p.pp}")
    _check(t.seq_length <= arch.max_position_embeddings,
           f"train.seq_length={t.seq_length} exceeds max_position_embeddings={arch.max_position_embeddings}")
    total_steps = planned_steps(cfg)
    o = cfg.optimizer
    _check(o.warmup_fraction is None or 0 <= o.warmup_fraction < 1,
           f"optimizer.warmup_fraction={o.warmup_fraction} must be in [0, 1)")
    _check(0 <= o.min_lr <= o.lr, f"optimizer.min_lr={o.min_lr} must be within [0, optimizer.lr={o.lr}]")
    if prec.fp8:
        _check(te_available(), f"precision.fp8={prec.fp8} needs Transformer Engine (pip install .[gpu])")
        _check(on_cuda, f"precision.fp8={prec.fp8} needs a CUDA GPU; this run is on the CPU")
        _check(cfg.model.spec != "local", "precision.fp8 needs model.spec=te (FP8 runs on the TE layer spec)")
    if p.sequence_parallel:
        _check(p.tp > 1, "parallel.sequence_parallel needs parallel.tp > 1")
        _check(on_cuda and te_available(), "parallel.sequence_parallel needs CUDA and Transformer Engine")
    if cfg.model.spec == "te":
        _check(te_available() and on_cuda, "model.spec=te needs Transformer Engine and a CUDA GPU")
    if not cfg.data.attention_across_documents and use_te_spec(cfg.model.spec, on_cuda):
        # The TE layer spec applies its own causal mask and ignores a dense per-sample mask;
        # blocking needs packed (THD) sequences, which this trainer does not build yet.
        raise ConfigError("data.attention_across_documents=false is not supported on the Transformer Engine "
                          "spec yet; use model.spec=local or allow attention across documents")
    if cfg.checkpoint.async_save:
        _check(on_cuda, "checkpoint.async_save needs a CUDA GPU (save synchronously on CPU)")
    if cfg.data.source == "blend":
        _check(len(cfg.data.blend) > 0, "data.source=blend needs at least one data.blend entry")
        for i, entry in enumerate(cfg.data.blend):
            for suffix in (".bin", ".idx"):
                _check(Path(entry.path + suffix).is_file(),
                       f"data.blend[{i}].path={entry.path!r}: {entry.path + suffix} does not exist")
            _check(entry.weight > 0, f"data.blend[{i}].weight must be > 0")
        _check(vocab is not None, "data.source=blend needs data.tokenizer (or a model.from dir with tokenizer/)")
        units = check_blend(cfg, vocab)
    else:
        units = None
    from megatron_slm.posttrain.datasets import check_objective, stored_kinds
    check_objective(cfg, stored_kinds(blend_prefixes(cfg) if cfg.data.source == "blend" else []))
    if vocab is not None:
        check_model_vocabulary(cfg, arch, vocab, units)
    if cfg.eval.tasks:
        _check(cfg.eval.data is not None and Path(cfg.eval.data).is_dir(),
               f"eval.tasks needs eval.data to be a directory of prepared benchmarks (got {cfg.eval.data!r})")
        _check(vocab is not None, "eval.tasks needs a tokenizer (data.tokenizer)")
        check_benchmarks(cfg, vocab)
    if cfg.checkpoint.load is not None:
        _check(Path(cfg.checkpoint.load).is_dir(), f"checkpoint.load={cfg.checkpoint.load!r} does not exist")
    padded = resolve_padded_vocab(arch, cfg, pinned)
    return RunPlan(cfg=cfg, arch=arch, padded_vocab=padded, world_size=world_size, dp=dp,
                   num_microbatches=num_microbatches, total_steps=total_steps,
                   tokenizer_dir=tokenizer_dir(cfg), on_cuda=on_cuda, units=units or recorded_units(cfg))
