"""The typed configuration of a training run: one schema, YAML in, dotted overrides on top.

    cfg = load_config("examples/configs/tiny_cpu.yaml", ["parallel.tp=2", "train.iters=10"])

Every field is declared once below with its type, default and a help line (the docs page
docs/config.md is generated from these). Loading converts and checks types, rejects unknown
keys and out-of-range values; cross-field rules (parallel layout, batch arithmetic, data
paths) are checked by `training/plan.py` before anything heavy starts. Errors are a
`ConfigError` whose message names the key.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from megatron_slm.vocab import DEFAULT_NUM_UNITS


class ConfigError(ValueError):
    """A user mistake in the configuration; the message names the offending key."""


def opt(default: Any = None, help: str = "", *, ge: Optional[float] = None, gt: Optional[float] = None,  # noqa: A002
        le: Optional[float] = None, lt: Optional[float] = None, **kw) -> Any:
    """A config field: its default, a help line, and (numbers) its range, checked when loading."""
    bounds = tuple((op, v) for op, v in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if v is not None)
    metadata = {"help": help, "bounds": bounds}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata, **kw)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return field(default_factory=default, metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)


_COMPARE = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}


def _check_bounds(value: Any, bounds: tuple, key: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number")
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for op, limit in bounds:
        if not _COMPARE[op](value, limit):
            raise ConfigError(f"{key}={value!r} is out of range: it must be {_range_text(bounds)}")


def _range_text(bounds: tuple) -> str:
    return " and ".join(f"{op} {limit:g}" for op, limit in bounds)


# --------------------------------------------------------------------------- sections


@dataclass
class ModelConfig:
    preset: Optional[str] = opt(None, "architecture preset (see megatron_slm.models.presets.PRESETS)")
    from_: Optional[str] = opt(None, "YAML key `from`: a converted checkpoint dir whose slm_model.json gives the architecture (and tokenizer)")
    num_layers: Optional[int] = opt(None, "override the preset's layer count", gt=0)
    hidden_size: Optional[int] = opt(None, "override the hidden size", gt=0)
    ffn_hidden_size: Optional[int] = opt(None, "override the MLP width", gt=0)
    num_attention_heads: Optional[int] = opt(None, "override the number of query heads", gt=0)
    num_query_groups: Optional[int] = opt(None, "override the number of KV heads (GQA groups)", gt=0)
    kv_channels: Optional[int] = opt(None, "override the head dimension", gt=0)
    vocab_size: Optional[int] = opt(None, "unpadded vocabulary size; default: the preset's, or the tokenizer's (text + units + 2)", gt=0)
    max_position_embeddings: Optional[int] = opt(None, "override the maximum sequence length", gt=0)
    rotary_base: Optional[float] = opt(None, "override the RoPE base", gt=0)
    rope_scaling: Optional[bool] = opt(None, "override Llama-3 RoPE frequency scaling")
    tie_embeddings: Optional[bool] = opt(None, "override tied input/output embeddings")
    make_vocab_size_divisible_by: int = opt(128, "pad the vocabulary to a multiple of this times TP", ge=1)
    init_method_std: float = opt(0.02, "std of the random initialisation", gt=0)
    spec: Literal["auto", "te", "local"] = opt("auto", "layer spec: Transformer Engine (GPU), local (CPU), or auto")
    recompute: Literal["none", "selective", "full"] = opt("none", "activation recomputation")
    attention_backend: Literal["auto", "flash", "fused", "unfused", "local"] = opt("auto", "attention kernel (TE spec only)")


@dataclass
class ParallelConfig:
    tp: int = opt(1, "tensor model parallel size", ge=1)
    pp: int = opt(1, "pipeline model parallel size", ge=1)
    vpp: Optional[int] = opt(None, "virtual pipeline stages per rank (interleaved 1F1B); None = plain 1F1B", ge=1)
    sequence_parallel: bool = opt(False, "sequence parallelism (needs TP > 1 and the TE spec)")
    distributed_optimizer: bool = opt(False, "shard optimizer state across data-parallel ranks (ZeRO-1)")
    overlap_grad_reduce: bool = opt(False, "overlap the DP gradient all-reduce with backward (GPU)")
    overlap_param_gather: bool = opt(False, "overlap the distributed optimizer's param all-gather (GPU)")


@dataclass
class PrecisionConfig:
    dtype: Literal["fp32", "bf16", "fp16"] = opt("bf16", "parameter/activation dtype (fp32 master weights kept for bf16/fp16)")
    fp8: Optional[Literal["hybrid", "e4m3"]] = opt(None, "FP8 format (Transformer Engine + GPU only)")
    fp8_recipe: Literal["delayed", "tensorwise", "mxfp8", "blockwise"] = opt("delayed", "FP8 scaling recipe")
    fp8_amax_history_len: int = opt(1024, "delayed scaling: amax history length", ge=1)
    fp8_amax_compute_algo: Literal["max", "most_recent"] = opt("max", "delayed scaling: amax reduction")
    fp8_param: bool = opt(False, "keep parameters in FP8")


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "sgd"] = opt("adamw", "optimizer")
    lr: float = opt(5e-4, "peak learning rate", ge=0)
    min_lr: float = opt(5e-5, "final learning rate of the decay", ge=0)
    weight_decay: float = opt(0.1, "decoupled weight decay", ge=0)
    adam_beta1: float = opt(0.9, "AdamW beta1", ge=0, lt=1)
    adam_beta2: float = opt(0.95, "AdamW beta2", ge=0, lt=1)
    adam_eps: float = opt(1e-8, "AdamW epsilon", gt=0)
    clip_grad: float = opt(0.5, "global gradient-norm clip (0 disables)", ge=0)
    decay_style: Literal["cosine", "linear", "constant", "wsd"] = opt("cosine", "learning-rate decay")
    warmup_iters: Optional[int] = opt(None, "warmup steps; when set, warmup_fraction is ignored", ge=0)
    warmup_fraction: Optional[float] = opt(0.01, "warmup as a fraction of the run's steps", ge=0, le=1)
    wsd_decay_fraction: float = opt(0.1, "WSD: fraction of the run spent in the final decay", ge=0, le=1)
    wsd_decay_style: Literal["linear", "cosine", "exponential", "minus_sqrt"] = opt("linear", "WSD: shape of the final decay")


@dataclass
class TrainConfig:
    micro_batch_size: int = opt(1, "sequences per microbatch per data-parallel rank", ge=1)
    global_batch_size: int = opt(8, "sequences per optimizer step (all DP ranks, all microbatches)", ge=1)
    seq_length: int = opt(2048, "tokens per sequence", ge=1)
    iters: Optional[int] = opt(None, "optimizer steps to train (exclusive with token_budget); 0 saves the initialised model untrained", ge=0)
    token_budget: Optional[float] = opt(None, "train until this many tokens are consumed (steps = ceil(budget / (global_batch * seq_length)))", gt=0)
    seed: int = opt(1234, "random seed (identical on every rank)", ge=0)
    eval_interval: Optional[int] = opt(None, "run validation every N steps (and at the end); None = only at the end", ge=1)
    eval_iters: int = opt(2, "validation batches per evaluation", ge=0)
    exit_interval: Optional[int] = opt(None, "checkpoint and exit when the step is a multiple of this (a job-length slice)", ge=1)
    exit_duration_minutes: Optional[float] = opt(None, "checkpoint and exit once this much wall time has passed", gt=0)
    exit_on_signal: bool = opt(True, "SIGTERM/SIGUSR1 -> checkpoint at the next step and exit 0")
    nan_policy: Literal["stop", "skip"] = opt("stop", "non-finite loss: stop the run, or skip that step's update")
    max_skipped_steps: int = opt(10, "with nan_policy=skip: stop after this many consecutive skipped steps", ge=0)
    objective: Literal["lm", "sft", "dpo"] = opt("lm", "lm: next-token loss on every target (pre-training); sft: loss on the response tokens of `sft` datasets; dpo: preference optimisation on `preference` datasets against the starting checkpoint (see dpo.*)")


@dataclass
class BlendEntry:
    path: str = opt("", "dataset prefix (without .bin/.idx)")
    weight: float = opt(1.0, "sampling weight (normalised over the blend)", ge=0)
    kind: Literal["text", "speech", "interleaved", "gpt", "preference", "sft"] = opt("gpt", "what the dataset holds (checked against its .meta.json); gpt: any pre-training data, incl. plain Megatron data without a sidecar; preference / sft: post-training pairs (train.objective=dpo / sft)")
    name: Optional[str] = opt(None, "name used for per-dataset validation loss (default: file stem)")


@dataclass
class InterleaveConfig:
    compat: Literal["slamkit", "none"] = opt("slamkit", "slamkit: SlamKit's samplers and document layout (SIMS; speech fraction above eta on short utterances, spans Poisson(lambda)); none: exact-eta spans of 1+Poisson(lambda-1) words. Must match the datasets' sidecars (docs/data.md)")
    method: Literal["poisson", "span", "random"] = opt("poisson", "how speech spans are chosen over words")
    mean_span_words: float = opt(10.0, "poisson: mean words per speech span (lambda)")
    speech_fraction: float = opt(0.3, "poisson: target fraction of words in speech (eta)")
    span_prob: float = opt(0.1, "span: probability that a span starts at a word")
    span_words: int = opt(10, "span: words per speech span")
    word_prob: Optional[float] = opt(None, "random: probability that a word is spoken (default: 0.5 with compat=slamkit, as SlamKit hard-codes it; 0.3 with none)")
    allow_mixed_compat: bool = opt(False, "train on datasets made under different compat conventions (or drawn with another data.interleave.compat than they were made with) instead of refusing")


@dataclass
class DPOConfig:
    beta: float = opt(0.1, "strength of the pull towards the reference model (the sigmoid loss's temperature)", gt=0)
    label_smoothing: float = opt(0.0, "conservative DPO: the probability that a pair's preference is flipped", ge=0, lt=0.5)
    sft_weight: float = opt(0.0, "weight of an SFT (NLL) term on the chosen completions, mean per chosen token over the global batch (RPO); 0 = off", ge=0)


@dataclass
class DataConfig:
    source: Literal["synthetic", "blend"] = opt("synthetic", "synthetic smoke-test tokens, or the datasets in `blend`")
    tokenizer: Optional[str] = opt(None, "extended tokenizer dir (HF format); default: <model.from>/tokenizer")
    num_units: Optional[int] = opt(None, f"speech units K; default: the K the extended tokenizer holds ({DEFAULT_NUM_UNITS} when extending a base tokenizer)", ge=1)
    blend: list[BlendEntry] = opt([], "datasets with weights and kinds")
    split: str = opt("98,1,1", "train,valid,test proportions of every dataset (contiguous document ranges; each needs >= 1 document)")
    mode: Literal["static", "dynamic"] = opt("static", "interleaved data: as stored, or re-drawn per (train.seed, epoch, utterance) (needs data preprocessed with --mode dynamic)")
    interleave: InterleaveConfig = opt(InterleaveConfig, "interleaving parameters for data preprocessed with --mode dynamic")
    attention_across_documents: bool = opt(True, "let packed documents attend to each other (False: block-diagonal mask)")
    loss_on: Literal["all", "speech", "text"] = opt("all", "which target tokens count in the loss (speech: unit labels only; text: text labels only; markers/EOD count only with all)")
    cache_dir: Optional[str] = opt(None, "where dataset index caches go (default: next to the data)")
    num_workers: int = opt(1, "DataLoader worker processes", ge=0)


@dataclass
class CheckpointConfig:
    save: Optional[str] = opt(None, "run directory: checkpoints, metrics.jsonl, config")
    load: Optional[str] = opt(None, "checkpoint to start from (default: resume from `save` if it has one)")
    interval: Optional[int] = opt(None, "save every N steps (and at the end)", ge=1)
    async_save: bool = opt(False, "write checkpoints in the background (GPU)")
    keep_last: Optional[int] = opt(None, "delete older checkpoints, keeping this many", ge=1)
    load_optimizer: bool = opt(True, "restore optimizer/scheduler/RNG/data position when present")


@dataclass
class LoggingConfig:
    interval: int = opt(1, "log every N steps", ge=1)
    tensorboard: bool = opt(True, "write TensorBoard events under <save>/tensorboard")
    wandb_project: Optional[str] = opt(None, "Weights & Biases project (needs `wandb` installed)")
    timers: bool = opt(True, "log a per-step time breakdown (data, fwd-bwd, optimizer)")


@dataclass
class EvalConfig:
    tasks: list[str] = opt([], "spoken-LM benchmarks to score during training (e.g. ssc,tsc)")
    interval: Optional[int] = opt(None, "score them every N steps", ge=1)
    data: Optional[str] = opt(None, "directory of prepared benchmark JSONL files")
    score: Literal["mean", "sum"] = opt("mean", "log-likelihood per candidate: mean per token or sum")


@dataclass
class RuntimeConfig:
    device: Literal["auto", "cuda", "cpu"] = opt("auto", "auto: CUDA when available, else CPU")
    backend: Literal["auto", "nccl", "gloo"] = opt("auto", "process-group backend (auto: nccl on CUDA, gloo on CPU)")
    timeout_minutes: int = opt(10, "collective timeout: a dead rank fails the job after this", ge=1)


@dataclass
class SLMConfig:
    model: ModelConfig = opt(ModelConfig, "architecture")
    parallel: ParallelConfig = opt(ParallelConfig, "parallel layout (DP is derived: world / (tp * pp))")
    precision: PrecisionConfig = opt(PrecisionConfig, "numerics")
    optimizer: OptimizerConfig = opt(OptimizerConfig, "optimizer and LR schedule")
    train: TrainConfig = opt(TrainConfig, "batch and duration")
    data: DataConfig = opt(DataConfig, "training data")
    dpo: DPOConfig = opt(DPOConfig, "preference optimisation (train.objective=dpo)")
    checkpoint: CheckpointConfig = opt(CheckpointConfig, "saving and loading")
    logging: LoggingConfig = opt(LoggingConfig, "metrics")
    eval: EvalConfig = opt(EvalConfig, "spoken-LM evaluation during training")
    runtime: RuntimeConfig = opt(RuntimeConfig, "devices and process groups")

    def to_dict(self) -> dict:
        return to_dict(self)


# --------------------------------------------------------------------------- loading

# YAML keys that are Python keywords map to a trailing-underscore field.
_ALIASES = {"from": "from_"}
_REVERSE_ALIASES = {v: k for k, v in _ALIASES.items()}


def _type_name(tp: Any) -> str:
    """Readable type for the docs: `int (or null)`, `one of auto, te, local`, `list of str`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        inner = " or ".join(_type_name(a) for a in args if a is not type(None))
        return f"{inner} (or null)" if type(None) in args else inner
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        return f"list of {_type_name(args[0])}"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the declared type, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            if type(None) in typing.get_args(tp):
                return None
        return _convert(value, args[0], key) if len(args) == 1 else value
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # "a,b" on the command line
            value = [v for v in value.split(",") if v] if item_tp is str else yaml.safe_load(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r} must be true or false")
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}={value!r} must be an integer")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} must be a number") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    kwargs = {}
    for raw_key, value in data.items():
        name = _ALIASES.get(raw_key, raw_key)
        key = f"{prefix}.{raw_key}" if prefix else raw_key
        if name not in names:
            known = ", ".join(sorted(_REVERSE_ALIASES.get(n, n) for n in names))
            raise ConfigError(f"unknown config key {key!r} (known in {prefix or 'the top level'}: {known})")
        kwargs[name] = _convert(value, hints[name], key)
        _check_bounds(kwargs[name], fields[name].metadata.get("bounds", ()), key)
    return cls(**kwargs)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(tree: dict, assignment: str) -> None:
    """`a.b.c=value` -> tree["a"]["b"]["c"] = yaml(value)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    dotted, text = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = _parse_scalar(text)


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (plain YAML keeps the last one
    silently, so a second `lr:` further down a section would quietly win)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.setdefault(key, line)
                except TypeError:  # an unhashable key: yaml's own error says so below
                    continue
                if first != line:
                    raise ConfigError(f"line {line}: key {key!r} is given twice in one mapping (first on line {first})")
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, where: str) -> Any:
    """Parse YAML safely (no tags that build objects), refusing duplicate keys; errors name `where`."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def load_config(path: Optional[str | Path] = None, overrides: list[str] = ()) -> SLMConfig:
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: unreadable ({e})") from None
        tree = load_yaml(text, str(path)) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for assignment in overrides:
        apply_override(tree, assignment)
    return _build(SLMConfig, tree, "")


def absolute_paths(cfg: SLMConfig) -> SLMConfig:
    """The same config with every file path absolute, as a run directory records it: a path
    relative to the working directory would mean something else wherever the run is read."""
    absolute = lambda p: str(Path(p).resolve()) if p else p  # noqa: E731
    d, c, m, e = cfg.data, cfg.checkpoint, cfg.model, cfg.eval
    return dataclasses.replace(
        cfg, model=dataclasses.replace(m, from_=absolute(m.from_)),
        data=dataclasses.replace(d, tokenizer=absolute(d.tokenizer), cache_dir=absolute(d.cache_dir),
                                 blend=[dataclasses.replace(b, path=absolute(b.path)) for b in d.blend]),
        checkpoint=dataclasses.replace(c, save=absolute(c.save), load=absolute(c.load)),
        eval=dataclasses.replace(e, data=absolute(e.data)))


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {_REVERSE_ALIASES.get(f.name, f.name): to_dict(getattr(obj, f.name))
                for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(data: dict) -> SLMConfig:
    return _build(SLMConfig, data, "")


def iter_fields(cls: type = SLMConfig, prefix: str = ""):
    """Yield (dotted key, type name, default, help) for every leaf field -- for docs."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{_REVERSE_ALIASES.get(f.name, f.name)}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield key, "section", None, f.metadata.get("help", "")
            yield from iter_fields(tp, key + ".")
            continue
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if dataclasses.is_dataclass(item):  # e.g. data.blend: document the fields of one entry
            yield key, _type_name(tp), [], f.metadata.get("help", "")
            yield from iter_fields(item, key + "[].")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = to_dict(f.default_factory())
        else:
            default = None
        bounds = f.metadata.get("bounds", ())
        yield key, _type_name(tp) + (f", {_range_text(bounds)}" if bounds else ""), default, f.metadata.get("help", "")
