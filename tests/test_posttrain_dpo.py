"""DPO through the real trainer on CPU + gloo: TRL's DPOTrainer on the HF exports gives our loss,
rewards and reference log-probabilities; TP=2 and PP=2 give the TP=1 losses; a stopped run
resumes exactly; a changed reference under a resumed run is refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import PRETRAIN, TINY_CPU, TOKENIZER, read_metrics, run_python, run_torchrun

pytestmark = pytest.mark.slow
K = 20
DPO_KEYS = ("loss", "dpo_loss", "sft_loss", "reward_accuracy", "reward_margin", "chosen_rewards", "rejected_rewards",
            "chosen_logps", "rejected_logps")


def preference_records(n: int, seed: int = 0) -> list[dict]:
    """Speech continuations (chosen: the prompt's count goes on; rejected: random units) and some
    text -> speech/text pairs, so rows carry modality tokens too."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = rng.integers(0, K, int(rng.integers(3, 10))).tolist()
        c = [(p[-1] + j) % K for j in range(1, int(rng.integers(3, 8)))]
        r = rng.integers(0, K, int(rng.integers(3, 8))).tolist()
        if i % 3 == 0:
            out.append({"id": i, "prompt": [{"text": "once upon"}, {"units": p}], "chosen": {"units": c},
                        "rejected": "a time"})
        else:
            out.append({"id": i, "prompt": {"units": p}, "chosen": {"units": c}, "rejected": {"units": r}})
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """An initial checkpoint with the extended tokenizer, and a preference dataset for it."""
    from megatron_slm.posttrain.preprocess import PairJob, run
    from megatron_slm.testing.synthetic_units import write_synthetic_corpus
    from megatron_slm.units.records import read_meta, write_meta

    root = tmp_path_factory.mktemp("dpo")
    units = write_synthetic_corpus(str(root / "units"), n=2, k=K).units
    src = root / "pref.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in preference_records(40)))
    write_meta(str(src), read_meta(units))
    run(PairJob("preference", str(TOKENIZER), [str(src)], str(root / "pref"), max_length=33, progress=False))
    run_python([PRETRAIN, "--config", TINY_CPU, "train.iters=0", f"data.tokenizer={TOKENIZER}", f"data.num_units={K}",
                f"checkpoint.save={root / 'init'}"], cwd=root)
    return {"root": root, "init": root / "init", "data": root / "pref"}


def dpo_args(setup, run_dir: Path, *extra) -> list:
    return [PRETRAIN, "--config", TINY_CPU, "train.objective=dpo", "train.iters=3", f"model.from={setup['init']}",
            "data.source=blend", f"data.blend=[{{path: {setup['data']}, kind: preference}}]", "data.split=80,20,0",
            "train.seq_length=32", "train.global_batch_size=4", "train.micro_batch_size=2", "optimizer.lr=1e-3",
            "optimizer.warmup_iters=0", "dpo.sft_weight=0.5", f"checkpoint.save={run_dir}", *extra]


@pytest.fixture(scope="module")
def tp1(setup) -> Path:
    run_dir = setup["root"] / "tp1"
    run_python(dpo_args(setup, run_dir), cwd=setup["root"])
    return run_dir


def train_losses(run_dir: Path) -> list[float]:
    return [line["loss"] for line in read_metrics(run_dir)[0]]


def test_dpo_equals_trl_on_the_hf_exports(setup, tp1, tmp_path):
    """The final validation (4 held-out pairs, step-3 policy, stored reference) equals TRL's
    DPOTrainer loss (sigmoid + 0.5 x SFT), rewards and log-probabilities on the HF exports of the
    policy and of the starting checkpoint; the stored reference log-probabilities equal the HF
    reference model's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pytest.importorskip("trl", reason="TRL is the reference: the `reference` extra (scripts/install.sh installs it)")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from megatron_slm.config import load_config
    from megatron_slm.convert.mcore_to_hf import convert_mcore_to_hf
    from megatron_slm.posttrain.datasets import PairData
    from megatron_slm.vocab import SpeechVocab

    for src, dst in ((setup["init"], tmp_path / "hf_ref"), (tp1, tmp_path / "hf_policy")):
        convert_mcore_to_hf(src, dst, progress=False)
    load = lambda d: AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()  # noqa: E731
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5],
                     max_length=None, report_to=[], use_cpu=True, bf16=False)  # fp32 as ours
    trainer = DPOTrainer(model=load(tmp_path / "hf_policy"), ref_model=load(tmp_path / "hf_ref"), args=args,
                         processing_class=AutoTokenizer.from_pretrained(tp1 / "tokenizer"),
                         train_dataset=Dataset.from_dict({"prompt": ["a"], "chosen": [" b"], "rejected": [" c"]}))
    cfg = load_config(tp1 / "config.yaml")
    data = PairData.open(cfg, SpeechVocab.from_pretrained(tp1 / "tokenizer"), [cfg.data.blend[0].path])
    records = data.records_of("valid")[:4]  # what validation read: eval_iters x global_batch_size, in order
    examples = []
    for r in records:
        (chosen, prompt_len), (rejected, _) = data.rows(int(r))
        examples.append({"prompt_ids": chosen[:prompt_len].tolist(), "chosen_ids": chosen[prompt_len:].tolist(),
                         "rejected_ids": rejected[prompt_len:].tolist()})
    inputs = trainer.data_collator(examples)
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, inputs, False).item()
        ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.ref_model, inputs)
    trl = {k: float(np.mean(v)) for k, v in trainer._metrics["eval"].items()}
    ours = read_metrics(tp1)[1][-1]
    assert ours["iteration"] == 3
    expected = {"loss": loss, "reward_accuracy": trl["rewards/accuracies"], "reward_margin": trl["rewards/margins"],
                "chosen_rewards": trl["rewards/chosen"], "rejected_rewards": trl["rewards/rejected"],
                "chosen_logps": trl["logps/chosen"], "rejected_logps": trl["logps/rejected"]}
    for key, value in expected.items():
        assert abs(ours[key] - value) <= 1e-5 * max(1.0, abs(value)), (key, ours[key], value)
    assert abs(ours["dpo_loss"] + 0.5 * ours["sft_loss"] - loss) <= 1e-5
    stored = np.load(next((tp1 / "reference").glob("*.npz")))["logps"][records]
    np.testing.assert_allclose(stored, np.stack([ref_chosen.numpy(), ref_rejected.numpy()], 1), rtol=1e-5, atol=1e-5)
    assert abs(train_losses(tp1)[0] - (np.log(2) + 0.5 * read_metrics(tp1)[0][0]["sft_loss"])) < 1e-5  # policy == ref


@pytest.mark.parametrize("layout", [["parallel.tp=2"], ["parallel.pp=2"], ["parallel.distributed_optimizer=true"]],
                         ids=["tp2", "pp2", "dp2"])  # dp2: the SFT term's per-token mean spans both DP ranks
def test_layouts_give_the_tp1_losses(setup, tp1, tmp_path, layout):
    run_torchrun(2, PRETRAIN, dpo_args(setup, tmp_path / "run", *layout)[1:], cwd=tmp_path)
    reference, got = train_losses(tp1), train_losses(tmp_path / "run")
    assert len(got) == 3
    for step, (a, b) in enumerate(zip(reference, got), 1):
        assert abs(a - b) <= 1e-4 * abs(a), f"{layout} step {step}: {b} vs tp1 {a}"


def test_exact_resume_and_a_changed_reference_is_refused(setup, tp1, tmp_path):
    import shutil

    ref, run_dir = tmp_path / "ref", tmp_path / "parts"
    shutil.copytree(setup["init"], ref)
    stopped = dpo_args({**setup, "init": ref}, run_dir, "train.exit_interval=2")
    run_python(stopped, cwd=tmp_path)
    assert (run_dir / "latest_checkpointed_iteration.txt").read_text() == "2"
    shutil.move(ref, tmp_path / "ref.orig")
    shutil.copytree(tp1, ref)  # model.from now holds other weights: the reference changed
    changed = run_python(stopped, cwd=tmp_path, check=False)
    assert changed.returncode != 0
    assert "the DPO reference changed under a resumed run" in changed.stderr, changed.stderr[-2000:]
    assert "Traceback" not in changed.stderr
    shutil.rmtree(ref)
    shutil.move(tmp_path / "ref.orig", ref)
    out = run_python(stopped, cwd=tmp_path)  # resumes with the stored reference, not a recomputed one
    assert "loaded 40 pairs' reference log-probabilities" in out.stdout
    assert train_losses(run_dir) == train_losses(tp1)
