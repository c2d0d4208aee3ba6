"""Config loading and up-front validation: every mistake is one clear line naming the key (out-of-range
settings, a dataset of the wrong kind in the blend)."""
from __future__ import annotations

import pytest

from conftest import CORPUS, TINY_CPU, TOKENIZER, one_error_line, run_python, train
from megatron_slm.config import ConfigError, load_config
from megatron_slm.training.plan import make_plan


def plan(overrides, world=1, on_cuda=False):
    return make_plan(load_config(TINY_CPU, overrides), world, on_cuda)


def test_overrides_are_typed_and_nested():
    cfg = load_config(TINY_CPU, ["parallel.tp=2", "optimizer.lr=1e-3", "train.token_budget=1e6",
                                 "train.iters=null", "data.blend=[{path: a, weight: 0.3, kind: text}]"])
    assert cfg.parallel.tp == 2 and cfg.optimizer.lr == 1e-3 and cfg.train.iters is None
    assert cfg.data.blend[0].kind == "text" and cfg.data.blend[0].weight == 0.3


@pytest.mark.parametrize("overrides, message", [
    (["parallel.tq=2"], "unknown config key 'parallel.tq'"),
    (["precision.dtype=fp64"], "precision.dtype='fp64' is not one of"),
    (["train.iters=abc"], "train.iters='abc' must be an integer"),
    (["parallel.tp"], "must look like section.key=value"),
])
def test_load_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(TINY_CPU, overrides)


@pytest.mark.parametrize("overrides, world, message", [
    (["parallel.tp=3"], 3, "parallel.tp=3 does not divide num_query_groups=2"),
    (["parallel.pp=3"], 3, "num_layers=4 is not divisible by parallel.pp=3"),
    (["parallel.tp=2"], 3, "world size 3 is not divisible by parallel.tp=2"),
    (["train.global_batch_size=6", "train.micro_batch_size=4"], 1, "train.global_batch_size=6 is not divisible"),
    (["train.token_budget=1000"], 1, "set exactly one of train.iters and train.token_budget"),
    (["precision.fp8=hybrid"], 1, "precision.fp8=hybrid needs"),
    (["parallel.sequence_parallel=true", "parallel.tp=2"], 2, "sequence_parallel needs"),
    (["data.source=blend", "data.blend=[{path: /nonexistent/ds, kind: text}]"], 1,
     "data.blend[0].path='/nonexistent/ds'"),
    (["train.seq_length=100000"], 1, "exceeds max_position_embeddings"),
    (["parallel.vpp=2"], 1, "parallel.vpp needs parallel.pp > 1"),
])
def test_plan_errors(overrides, world, message):
    with pytest.raises(ConfigError) as e:
        plan(overrides, world)
    assert message in str(e.value)


def test_a_key_given_twice_in_a_yaml_config_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("optimizer:\n  lr: 1.0e-3\n  min_lr: 0.0\n  lr: 2.0e-3\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: line 4: key 'lr' is given twice in one mapping \(first on line 2\)"):
        load_config(path)
    path.write_text("train:\n  iters: 3\noptimizer:\n  lr: 1.0e-3\ntrain:\n  seed: 2\n")
    with pytest.raises(ConfigError, match="line 5: key 'train' is given twice"):
        load_config(path)


def test_token_budget_sets_steps_and_dp_is_derived():
    p = plan(["train.iters=null", "train.token_budget=5000", "parallel.tp=2"], world=4)
    assert p.dp == 2 and p.total_steps == -(-5000 // (8 * 64)) and p.num_microbatches == 2


def test_cli_reports_one_line_without_traceback(repo, tmp_path):
    proc = run_python([repo / "pretrain_slm.py", "--config", TINY_CPU, "parallel.tp=3"], cwd=tmp_path, check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert err[-1] == "error: parallel.tp=3 does not divide num_query_groups=2", proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("override, message", [
    ("logging.interval=0", "logging.interval=0 is out of range: it must be >= 1"),
    ("train.global_batch_size=0", "train.global_batch_size=0 is out of range"),
    ("train.seq_length=0", "train.seq_length=0 is out of range"),
    ("data.blend=[{path: x, weight: .inf, kind: text}]", "data.blend[0].weight=inf must be a finite number"),
])
def test_bad_training_settings_are_refused_on_load(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(TINY_CPU, [override])


def test_bad_training_settings_are_one_line_on_the_command_line(tmp_path):
    import torch

    from megatron_slm.runtime.distributed import choose_device

    line = one_error_line(train(["logging.interval=0"], tmp_path, check=False))
    assert "logging.interval=0 is out of range" in line, line
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="runtime.device=cuda but no CUDA device is available"):
            choose_device(load_config(TINY_CPU, ["runtime.device=cuda"]).runtime)


@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
def test_a_dataset_of_the_wrong_kind_is_refused_by_the_plan(tmp_path):
    from megatron_slm.data.preprocess import PreprocessJob, run as preprocess
    from megatron_slm.vocab import SpeechVocab

    corpus = CORPUS
    SpeechVocab.from_pretrained(TOKENIZER, num_units=100).save(tmp_path / "tok")
    preprocess(PreprocessJob(kind="speech", tokenizer=str(tmp_path / "tok"), inputs=[str(corpus / "units.jsonl")],
                             out_prefix=str(tmp_path / "speech"), progress=False))
    proc = train(["data.source=blend", f"data.tokenizer={tmp_path / 'tok'}", "train.iters=1",
                  f"data.blend=[{{path: {tmp_path / 'speech'}, weight: 1, kind: interleaved}}]"], tmp_path, check=False)
    line = one_error_line(proc)
    assert "data.blend[0]" in line and "holds 'speech' documents but the blend says kind='interleaved'" in line
    assert "[train]" not in proc.stdout
