"""Choosing the next token: which ids may come out (modality masks), when to stop, and how to draw.

    policy = TokenPolicy.for_output(vocab, rows=model_rows, output="speech")   # units + EOS (+ <text> = stop)
    cfg = SamplingConfig.preset("slamkit")                                     # T=0.8, top-k 25, 150 tokens
    ids = next_tokens(logits, policy, cfg, generators, seen)                   # [b] int64

The output modality is enforced by masking: speech output can only draw unit ids, text output
only text ids, and the padded vocabulary rows (Megatron pads the embedding, an HF export trims
it) never take probability mass. When one modality is asked for, the other modality's marker
stays drawable as a *stop* token: a model that wants to switch modality ends its continuation
there (it is not emitted). EOS always stops.

With a multi-codebook tokenizer (a codec: n_q units per frame, codebook q its own id range) the
mask also keeps frames whole and in codebook order (`FrameRule`): after the codebook-q unit of a
frame only a codebook-(q+1) unit may follow, so nothing else (a stop, text, another marker) can
come out mid-frame; at a frame boundary only codebook 0 opens the next frame. The decoding loop
tracks each row's place in its frame and drops a partial last frame when the length runs out.

Each prompt draws from its own `torch.Generator`, seeded from (seed, prompt id): a prompt's sample
does not depend on which other prompts share its batch, on the batch size, on data-parallel
sharding, or on the backend's batching.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace
from typing import Optional, Sequence

import numpy as np
import torch

from megatron_slm.vocab import MODALITY_SPEECH, MODALITY_TEXT

OUTPUT_MODALITIES = ("speech", "text", "any")

# Defaults of the reference implementations (their generation configs):
PRESETS = {
    # SlamKit's generation metric: 3 s prompt, sampling, temperature 0.8, top-k 25, 150 new tokens
    "slamkit": dict(temperature=0.8, top_k=25, top_p=1.0, max_new_tokens=150),
    # SpiritLM: temperature 0.9, nucleus 0.95, 200 new tokens
    "spiritlm": dict(temperature=0.9, top_k=0, top_p=0.95, max_new_tokens=200),
}

STOP_EOS = "eos"
STOP_SWITCH = "modality_switch"
STOP_LENGTH = "length"      # max_new_tokens reached
STOP_CONTEXT = "context"    # the model's context is full


class GenerationError(ValueError):
    """Bad generation input or settings; the message names the prompt/file and the field."""


MAX_SCALE = 1e4  # beyond this a temperature is uniform sampling and a penalty a ban: both only overflow


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = PRESETS["slamkit"]["temperature"]
    top_k: int = PRESETS["slamkit"]["top_k"]          # 0 = off
    top_p: float = PRESETS["slamkit"]["top_p"]        # 1.0 = off
    repetition_penalty: float = 1.0                   # 1.0 = off; >1 discourages ids already in the sequence
    max_new_tokens: int = PRESETS["slamkit"]["max_new_tokens"]
    greedy: bool = False
    seed: int = 0

    @classmethod
    def preset(cls, name: str, **overrides) -> "SamplingConfig":
        if name not in PRESETS:
            raise GenerationError(f"unknown sampling preset {name!r} (choose {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})

    def __post_init__(self):
        # finite and bounded: an overflowing temperature or penalty turns the masked logits (-inf) into
        # NaN, and the modality mask stops holding (text in speech rows)
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > MAX_SCALE:
                raise GenerationError(f"{name} must be a finite number within +-{MAX_SCALE:g} (got {value})")
        if not self.greedy and not self.temperature > 0:
            raise GenerationError(f"temperature must be > 0 (got {self.temperature}); use --greedy for argmax decoding")
        if self.top_k < 0:
            raise GenerationError(f"top_k must be >= 0 (got {self.top_k})")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1] (got {self.top_p})")
        if not self.repetition_penalty > 0:
            raise GenerationError(f"repetition_penalty must be > 0 (got {self.repetition_penalty})")
        if self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")

    def to_json(self) -> dict:
        out = asdict(self)
        if self.greedy:  # what greedy ignores is not part of its settings
            for key in ("temperature", "top_k", "top_p", "seed"):
                out.pop(key)
        return out

    def with_(self, **changes) -> "SamplingConfig":
        return replace(self, **changes)


@dataclass(frozen=True)
class FrameRule:
    """Speech units come in frames of `num_codebooks` ids, codebook q taking ids
    unit_offset + [q*K, (q+1)*K)."""
    unit_offset: int
    codebook_size: int
    num_codebooks: int

    def codebook(self, token: int) -> Optional[int]:
        """The codebook of a unit id, None for any other id."""
        q = (int(token) - self.unit_offset) // self.codebook_size
        return q if int(token) >= self.unit_offset and q < self.num_codebooks else None

    def phase_after(self, ids: Sequence[int]) -> int:
        """How many units of an unfinished frame end `ids` (0: it ends on a frame boundary):
        the trailing run of unit ids, modulo n_q."""
        run = 0
        for tok in reversed(list(ids)):
            if self.codebook(tok) is None:
                break
            run += 1
        return run % self.num_codebooks

    def next_phase(self, phase: int, token: int) -> int:
        return (phase + 1) % self.num_codebooks if self.codebook(token) is not None else 0

    def masks(self, allowed: torch.Tensor) -> torch.Tensor:
        """[n_q, rows]: what may be drawn at each place in a frame."""
        ids = torch.arange(allowed.shape[0])
        q = torch.div(ids - self.unit_offset, self.codebook_size, rounding_mode="floor")
        unit = (ids >= self.unit_offset) & (q < self.num_codebooks)
        rows = [allowed & ~(unit & (q != 0))]  # a frame boundary: codebook 0 or a non-unit id
        rows += [allowed & unit & (q == k) for k in range(1, self.num_codebooks)]
        return torch.stack(rows)


@dataclass
class TokenPolicy:
    """What may be drawn (`allowed`, bool [rows]) and which drawn ids end a continuation;
    `frame`: the frame rule of multi-codebook speech (None: one unit per frame)."""

    allowed: torch.Tensor
    stops: dict[int, str]
    output: str
    frame: Optional[FrameRule] = None
    frame_allowed: Optional[torch.Tensor] = None  # [n_q, rows]: `allowed` at each place in a frame

    def allowed_rows(self, phases: Optional[Sequence[int]]) -> torch.Tensor:
        """[rows], or [b, rows] for rows at `phases` (their places in a frame)."""
        if self.frame is None or phases is None:
            return self.allowed
        return self.frame_allowed[torch.as_tensor(list(phases), dtype=torch.long)]

    @classmethod
    def for_output(cls, vocab, rows: int, output: str, stop_at_switch: bool = True) -> "TokenPolicy":
        """`rows`: the model's output rows (>= vocab.vocab_size; rows past it are padding)."""
        if output not in OUTPUT_MODALITIES:
            raise GenerationError(f"unknown output modality {output!r} (choose {', '.join(OUTPUT_MODALITIES)})")
        if rows < vocab.vocab_size:
            raise GenerationError(f"the model has {rows} output rows but the vocabulary has {vocab.vocab_size} ids "
                                  "(was it exported with the extended vocabulary?)")
        ids = np.arange(rows)
        real = ids < vocab.vocab_size
        modality = vocab.modality_of(ids)
        stops = {int(vocab.eod): STOP_EOS}
        if output == "any":
            allowed = real.copy()
            if vocab.bos is not None and vocab.bos != vocab.eod:
                allowed[vocab.bos] = False  # BOS starts a document; it never continues one
        else:
            allowed = real & (modality == (MODALITY_SPEECH if output == "speech" else MODALITY_TEXT))
            if stop_at_switch:
                other = vocab.text_id if output == "speech" else vocab.speech_id
                stops[int(other)] = STOP_SWITCH
        for i in stops:
            allowed[i] = True
        allowed = torch.from_numpy(allowed)
        inv = getattr(vocab, "inventory", None)
        if inv is None or inv.num_codebooks == 1:
            return cls(allowed, stops, output)
        frame = FrameRule(vocab.unit_offset, inv.codebook_size, inv.num_codebooks)
        return cls(allowed, stops, output, frame, frame.masks(allowed))

    def stop_reason(self, token: int) -> Optional[str]:
        return self.stops.get(int(token))


def prompt_generator(seed: int, prompt_id: str) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, prompt id)."""
    digest = hashlib.sha256(f"{seed}\0{prompt_id}".encode("utf-8")).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def mask_logits(logits: torch.Tensor, policy: TokenPolicy, cfg: SamplingConfig,
                seen: Optional[torch.Tensor] = None, phases: Optional[Sequence[int]] = None) -> torch.Tensor:
    """float32 [b, V] logits with disallowed ids at -inf and the repetition penalty applied
    (HF's rule: a seen id's positive logit is divided by the penalty, a negative one multiplied).
    `phases`: each row's place in its frame (multi-codebook speech)."""
    x = logits.float()
    V = x.shape[-1]
    allow = policy.allowed_rows(phases)[..., :V].to(x.device)
    if allow.shape[-1] < V:  # more rows than the policy knows: padding, never drawn
        pad = torch.zeros(*allow.shape[:-1], V - allow.shape[-1], dtype=torch.bool, device=x.device)
        allow = torch.cat([allow, pad], dim=-1)
    if seen is not None and cfg.repetition_penalty != 1.0:
        p = cfg.repetition_penalty
        penalised = torch.where(x > 0, x / p, x * p)
        x = torch.where(seen[:, :V].to(x.device), penalised, x)
    return x.masked_fill(~allow, float("-inf"))


def candidates(x: torch.Tensor, cfg: SamplingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature, top-k, then top-p (nucleus: the smallest set of ids whose mass reaches p, the
    most likely id always kept) on masked logits [b, V] -> (probabilities [b, m], their ids [b, m]),
    most likely first; m = top_k (or V). Working on the k candidates keeps a step cheap."""
    x = x.float() / cfg.temperature
    if cfg.top_k and cfg.top_k < x.shape[-1]:
        vals, ids = torch.topk(x, cfg.top_k, dim=-1)
    else:
        vals, ids = torch.sort(x, dim=-1, descending=True)
    probs = torch.softmax(vals, dim=-1)
    if cfg.top_p < 1.0:
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the ids ranked above each one
        probs = probs.masked_fill(before >= cfg.top_p, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs, ids


def filtered_probs(x: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """The full distribution [b, V] that `next_tokens` draws from."""
    probs, ids = candidates(x, cfg)
    return torch.zeros(x.shape, dtype=probs.dtype, device=probs.device).scatter(-1, ids, probs)


def next_tokens(logits: torch.Tensor, policy: TokenPolicy, cfg: SamplingConfig,
                generators: Sequence[torch.Generator], seen: Optional[torch.Tensor] = None,
                phases: Optional[Sequence[int]] = None) -> torch.Tensor:
    """One id per row of `logits` [b, V]; row r draws from `generators[r]` (a row whose generator
    is None -- a finished one -- takes the argmax and consumes no randomness). `phases`: each
    row's place in its frame (multi-codebook speech)."""
    x = mask_logits(logits, policy, cfg, seen, phases)
    if cfg.greedy or all(g is None for g in generators):
        return x.argmax(dim=-1).cpu()
    probs, ids = candidates(x, cfg)
    live = [r for r, g in enumerate(generators) if g is not None]
    rows = None if len(live) == len(generators) else torch.tensor(live)
    if rows is not None:  # finished rows neither draw nor consume randomness
        probs, ids = probs[rows], ids[rows]
    # inverse-CDF draws, one uniform per live row from its own generator
    u = torch.cat([torch.rand(1, generator=generators[r], dtype=torch.float64) for r in live])
    cdf = torch.cumsum(probs.double().cpu(), dim=-1)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1)).clamp_(max=cdf.shape[1] - 1)
    drawn = ids.cpu().gather(1, pick).squeeze(1)
    if rows is None:
        return drawn
    out = x.argmax(dim=-1).cpu()
    out[rows] = drawn
    return out
