"""Relaunching into a run directory continues that run and nothing else: a config that would
change results is refused before training (naming each key), a finished run relaunched has
nothing to add, another architecture and a missing benchmark are refused by the run plan."""
from __future__ import annotations

import pytest

from conftest import PRETRAIN, REPO, TINY_CPU, TOKENIZER, run_python
from megatron_slm.config import ConfigError, load_config
from megatron_slm.eval.items import Candidate, Item, write_items
from megatron_slm.training.plan import load_vocab, make_plan, tokenizer_dir
from megatron_slm.training.relaunch import may_change


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = tmp_path_factory.mktemp("relaunch") / "run"
    run_python([PRETRAIN, "--config", TINY_CPU, "train.iters=2", f"checkpoint.save={run}"], cwd=REPO)
    return run


def plan(overrides):
    cfg = load_config(TINY_CPU, overrides)
    return make_plan(cfg, 1, False, load_vocab(cfg, tokenizer_dir(cfg)))


def snapshot(run):
    return {name: (run / name).read_bytes() for name in ("metrics.jsonl", "config.yaml", "slm_model.json")}


@pytest.mark.slow  # two launches of the CLI
def test_an_unchanged_relaunch_of_a_finished_run_appends_nothing(finished):
    before = snapshot(finished)
    # logging.interval decides only what is logged: a relaunch may change it
    out = run_python([PRETRAIN, "--config", TINY_CPU, "train.iters=2", f"checkpoint.save={finished}",
                      "logging.interval=2"], cwd=REPO)
    assert "nothing to do" in out.stdout
    assert snapshot(finished)["metrics.jsonl"] == before["metrics.jsonl"]  # no second validation line


@pytest.mark.slow  # two launches of the CLI
def test_a_relaunch_that_changes_results_is_refused_naming_the_keys(finished):
    before = snapshot(finished)
    out = run_python([PRETRAIN, "--config", TINY_CPU, "train.iters=4", "optimizer.lr=1e-3",
                      f"checkpoint.save={finished}", "logging.interval=3"], cwd=REPO, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "train.iters: 2 -> 4" in lines[0] and "optimizer.lr: 0.003 -> 0.001" in lines[0], lines[0]
    assert "logging.interval:" not in lines[0]  # a key that may change is not reported
    assert snapshot(finished) == before  # config.yaml is not rewritten, metrics untouched


def test_another_architecture_is_refused_by_the_run_plan(finished, tmp_path):
    relaunch = load_config(TINY_CPU, ["train.iters=2", f"checkpoint.save={finished}", "model.num_layers=2"])
    with pytest.raises(ConfigError, match=r"model\.num_layers: None -> 2"):
        make_plan(relaunch, 1, False)
    # a new run starting from the checkpoint: the plan names the field, not a shape mismatch later
    start_from = load_config(TINY_CPU, ["train.iters=2", f"checkpoint.load={finished}",
                                        f"checkpoint.save={tmp_path / 'new'}", "model.hidden_size=32"])
    with pytest.raises(ConfigError, match=r"checkpoint\.load=.*another architecture.*hidden_size 64 -> 32"):
        make_plan(start_from, 1, False)
    make_plan(load_config(TINY_CPU, ["train.iters=2", f"checkpoint.load={finished}",
                                     f"checkpoint.save={tmp_path / 'new'}"]), 1, False)  # the same one loads


def test_every_benchmark_in_eval_tasks_is_checked_before_step_0(tmp_path):
    item = Item(id="a", task="word_shuffle", positive=Candidate(text="the cat sat"),
                negatives=[Candidate(text="cat the sat")])
    write_items(tmp_path / "word_shuffle.jsonl", "word_shuffle", [item], None)
    base = ["train.iters=2", f"data.tokenizer={TOKENIZER}", "data.num_units=100", f"eval.data={tmp_path}"]
    plan(base + ["eval.tasks=[word_shuffle]"])
    with pytest.raises(ConfigError, match=r"eval\.tasks: benchmark 'ssc': .*ssc\.jsonl does not exist"):
        plan(base + ["eval.tasks=[word_shuffle,ssc]"])
    (tmp_path / "broken.jsonl").write_text('{"format": "not a benchmark"}\n')
    with pytest.raises(ConfigError, match=r"eval\.tasks: .*broken\.jsonl:1"):
        plan(base + ["eval.tasks=[broken]"])


@pytest.mark.parametrize("key, free", [("logging.interval", True), ("parallel.tp", True),
                                       ("train.eval_interval", True), ("train.iters", False),
                                       ("train.eval_iters", False), ("data.blend", False),
                                       ("checkpoint.load", False), ("eval.tasks", False)])
def test_which_keys_a_relaunch_may_change(key, free):
    assert may_change(key) is free
