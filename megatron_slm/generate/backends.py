"""Where next-token logits come from: an HF causal LM (KV cache) or Megatron GPTModels at any TP/PP.

Both left-pad a batch of prompts to the longest, prefill it in one forward, then feed one token
per step through a KV cache; padding is masked out of attention. HF passes each row's true
positions. Megatron-Core's RoPE ignores position ids, but rotary attention depends only on the
distance between query and key, so a row shifted right by its padding attends exactly as it
would unpadded (tests check HF == Megatron greedy tokens at TP=2 and PP=2).

Megatron: the KV cache is Megatron-Core's own `StaticInferenceContext`, and every forward (the
prefill and each step) runs through the forward-only pipeline schedule, so any TP/PP works,
on the CPU (gloo) too. The higher-level Megatron-Core inference engines are not used: their
dynamic engine needs CUDA (unified memory, CUDA graphs, flash kernels), and their text
generation controller has no per-step allowed-token mask, which modality-enforced generation
needs. Logits come out of the last pipeline stage gathered over TP; that stage draws the ids
(identically on its TP ranks), and two broadcasts (TP group, then pipeline group) give every
rank the same ids. On CUDA the Transformer Engine attention applies its own causal mask and
ignores a padding mask, so prompts there are batched by equal length (`equal_lengths`).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

from megatron_slm.generate.sampling import GenerationError


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens [b, L] left-padded, valid [b, L] bool."""
    L = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), L), pad_id, dtype=torch.long)
    valid = torch.zeros((len(prompts), L), dtype=torch.bool)
    for r, p in enumerate(prompts):
        tokens[r, L - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        valid[r, L - len(p):] = True
    return tokens, valid


class HFSource:
    """A transformers causal LM with its KV cache (e.g. a model exported by convert_checkpoint)."""

    samples = True
    equal_lengths = False

    def __init__(self, model: torch.nn.Module, vocab):
        self.model = model.eval()
        self.vocab = vocab
        self.rows = model.get_output_embeddings().weight.shape[0]
        self.context = int(getattr(model.config, "max_position_embeddings", 0) or 2 ** 31)
        self.pad_id = int(vocab.pad)
        self.device = next(model.parameters()).device
        self._state = None
        # transformers renamed `past_key_values` to `cache` (5.x deprecates the old name)
        import inspect

        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @staticmethod
    def _cache_of(out):
        return out.cache if getattr(out, "cache", None) is not None else out.past_key_values

    @classmethod
    def from_pretrained(cls, hf_dir: str, vocab, device: Optional[str] = None, dtype: Optional[str] = None) -> "HFSource":
        from transformers import AutoModelForCausalLM

        if not os.path.isfile(os.path.join(hf_dir, "config.json")):
            raise GenerationError(f"{hf_dir}: not an HF model directory (no config.json)")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        name = dtype or ("bf16" if device.startswith("cuda") else "fp32")
        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch_dtype, local_files_only=True)
        return cls(model.to(device), vocab)

    @torch.inference_mode()  # cheaper than no_grad: no version counters on the cache
    def begin(self, prompts, new_tokens):
        tokens, valid = _left_pad(prompts, self.pad_id)
        mask = valid.long().to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        if bool(valid.all()):  # nothing padded: the plain causal path (no mask to build every step)
            mask = None
        out = self.model(input_ids=tokens.to(self.device), attention_mask=mask, position_ids=pos,
                         use_cache=True, logits_to_keep=1)
        self._state = (self._cache_of(out), mask, pos[:, -1:])
        return out.logits[:, -1]

    @torch.inference_mode()
    def advance(self, ids):
        past, mask, last = self._state
        if mask is not None:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = last + 1
        out = self.model(input_ids=ids.to(self.device)[:, None], attention_mask=mask, position_ids=pos,
                         use_cache=True, **{self._cache_kw: past})
        self._state = (self._cache_of(out), mask, pos)
        return out.logits[:, -1]

    def agree(self, ids, batch):
        return ids

    def end(self):
        self._state = None


class MegatronSource:
    """This rank's GPTModel chunk(s) (as built by models.provider.build_gpt_models); every rank
    of a data-parallel replica must call with the same batches (the calls are collective)."""

    def __init__(self, models: list, vocab, padded_vocab_size: int, context: int):
        from megatron.core import parallel_state as ps

        if len(models) != 1:
            raise GenerationError("generation runs one model chunk per rank (no virtual pipeline stages)")
        self.models = models
        self.vocab = vocab
        self.rows = int(padded_vocab_size)
        self.context = int(context)
        self.pad_id = int(vocab.pad)
        self.device = next(models[0].parameters()).device
        self.on_cpu = self.device.type == "cpu"
        self.equal_lengths = not self.on_cpu
        self.samples = ps.is_pipeline_last_stage(ignore_virtual=True)
        self._ctx = None

    def _forward(self, tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """One forward of [b, s] tokens through the pipeline; last-token logits [b, rows] on the last stage."""
        from megatron.core.pipeline_parallel import get_forward_backward_func

        b, s = tokens.shape
        offset = self._ctx.sequence_len_offset
        pos = (torch.arange(s, dtype=torch.long) + offset).unsqueeze(0).expand(b, s).contiguous().to(self.device)
        got: list[torch.Tensor] = []
        ctx = self._ctx

        def step(data_iterator, model):
            t, p, m = next(data_iterator)
            out = model(t, p, m, inference_context=ctx, runtime_gather_output=True)

            def keep(logits):
                got.append(logits[:, -1].float())
                return torch.zeros((), device=logits.device), {}

            return out, keep

        mb = (tokens.to(self.device), pos, mask.to(self.device) if mask is not None else None)
        get_forward_backward_func()(forward_step_func=step, data_iterator=iter([mb]), model=self.models,
                                    num_microbatches=1, seq_length=s, micro_batch_size=b, forward_only=True)
        self._ctx.sequence_len_offset += s
        return got[0] if got else None

    @torch.no_grad()
    def begin(self, prompts, new_tokens):
        from megatron.core.inference.contexts import StaticInferenceContext

        for m in self.models:
            m.eval()
        tokens, valid = _left_pad(prompts, self.pad_id)
        b, L = tokens.shape
        if self.equal_lengths and not bool(valid.all()):
            raise GenerationError("on CUDA a batch must hold prompts of one length (the batcher groups them)")
        self._ctx = StaticInferenceContext(b, L + new_tokens)
        self._keypad = ~valid
        self._total = L + new_tokens
        return self._forward(tokens, self._mask(L, L))

    def _mask(self, q: int, k: int) -> Optional[torch.Tensor]:
        """[b, 1, q, k] True = masked: causal over the last q of k positions, plus left padding.
        Only the local (CPU) attention reads it; TE on CUDA applies the causal mask itself."""
        if not self.on_cpu:
            return None
        causal = torch.triu(torch.ones(q, k, dtype=torch.bool), k - q + 1)
        return (causal[None] | self._keypad[:, None, :k]).unsqueeze(1)

    @torch.no_grad()
    def advance(self, ids):
        k = self._ctx.sequence_len_offset + 1
        if k > self._keypad.shape[1]:
            self._keypad = torch.cat([self._keypad, torch.zeros(self._keypad.shape[0], self._total - self._keypad.shape[1],
                                                                dtype=torch.bool)], dim=1)
        return self._forward(ids[:, None], self._mask(1, k))

    def agree(self, ids, batch):
        import torch.distributed as dist
        from megatron.core import parallel_state as ps

        buf = (ids if ids is not None else torch.zeros(batch, dtype=torch.long)).to(self.device)
        if ps.get_tensor_model_parallel_world_size() > 1 and self.samples:
            dist.broadcast(buf, src=ps.get_tensor_model_parallel_src_rank(), group=ps.get_tensor_model_parallel_group())
        if ps.get_pipeline_model_parallel_world_size() > 1:
            dist.broadcast(buf, src=ps.get_pipeline_model_parallel_last_rank(), group=ps.get_pipeline_model_parallel_group())
        return buf.cpu()

    def end(self):
        self._ctx = None


def check_parallel_layout(arch, tp: int, pp: int, world: int, where: str) -> None:
    """TP/PP must split the model and the job: one clear message otherwise."""
    from megatron_slm.models.spec import layout_problem

    problem = layout_problem(arch, tp, pp)
    if problem:
        raise GenerationError(f"{where}: {problem}")
    if world % (tp * pp):
        raise GenerationError(f"{world} processes cannot hold --tp {tp} x --pp {pp} = {tp * pp} model-parallel ranks "
                              "(launch a multiple of tp*pp processes with torchrun)")


def load_megatron_source(mcore_dir: str, vocab, tp: int = 1, pp: int = 1, iteration: Optional[int] = None,
                         dtype: Optional[str] = None) -> MegatronSource:
    """Initialise the process groups (TP x PP x DP over the launched ranks) and load the checkpoint."""
    from megatron_slm.checkpoint.inference import load_for_inference
    from megatron_slm.models.record import read_model_record

    arch = read_model_record(mcore_dir).arch
    check_parallel_layout(arch, tp, pp, int(os.environ.get("WORLD_SIZE", "1")), mcore_dir)
    if arch.vocab_size < vocab.vocab_size:
        raise GenerationError(f"{mcore_dir}: the model has {arch.vocab_size} vocabulary rows but the tokenizer "
                              f"has {vocab.vocab_size} ids")
    loaded = load_for_inference(mcore_dir, tp, pp, iteration, dtype)
    return MegatronSource(loaded.models, vocab, loaded.padded_vocab_size, arch.max_position_embeddings)
