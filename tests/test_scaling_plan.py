"""isoFLOP sweep planning: every config loads in the trainer's schema and hits its budget."""
import csv

import pytest

from megatron_slm.config import load_config
from megatron_slm.models.flops import param_counts
from megatron_slm.models.arch import ModelArch
from megatron_slm.scaling.fit import REFERENCE_LAWS
from megatron_slm.scaling.plan import PlanError, make_plan, write_plan

from conftest import TOKENIZER

BASE = {"train": {"global_batch_size": 256, "seq_length": 2048}, "data": {"source": "blend"}}


def _arch_of(cfg) -> ModelArch:
    from megatron_slm.models.presets import PRESETS

    shape = {k: v for k, v in dict(vars(cfg.model)).items()
             if k in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
                      "kv_channels") and v is not None}
    return PRESETS[cfg.model.preset].with_speech_units(cfg.data.num_units or 500).replace(**shape)


def test_ladder_plan_writes_loadable_configs_on_budget(tmp_path):
    budgets = [1e19, 1e20]
    plan = make_plan(budgets=budgets, family="qwen2.5", prior=REFERENCE_LAWS["textless"], base_config=BASE,
                     overrides=["parallel.tp=2"], runs_dir=tmp_path / "runs")
    files = write_plan(plan, tmp_path / "sweep", gpus_per_node=4)
    rows = list(csv.DictReader(open(files["plan_csv"])))
    assert len(rows) == len(plan.runs) >= 10
    for row in rows:
        cfg = load_config(row["config"])  # the trainer's own loader
        arch = _arch_of(cfg)
        n = param_counts(arch).total
        assert int(row["params"]) == n
        assert cfg.train.iters is None and cfg.train.token_budget == float(row["tokens"])
        assert 6 * n * cfg.train.token_budget == pytest.approx(float(row["budget"]), rel=1e-6)
        assert cfg.checkpoint.save == str(tmp_path / "runs" / row["run"])
        assert arch.num_attention_heads % 2 == 0 and arch.num_query_groups % 2 == 0  # tp=2
        assert cfg.train.global_batch_size == 256 and cfg.data.source == "blend"
    for c in budgets:  # sizes straddle the prior's optimum so each set has an interior minimum
        sizes = sorted(int(r["params"]) for r in rows if float(r["budget"]) == c)
        n_opt = REFERENCE_LAWS["textless"].optimal(c)[0]
        assert len(sizes) >= 5 and sizes[0] < n_opt < sizes[-1]
    script = files["sbatch"].read_text()
    assert f"#SBATCH --array=0-{len(rows) - 1}" in script and "#SBATCH --gpus-per-node=4" in script
    assert "-m megatron_slm.commands.launch --srun" in script  # the installed launcher, no checkout path
    assert len(files["configs_txt"].read_text().splitlines()) == len(rows)


def test_preset_plan_skips_out_of_range_pairs(tmp_path):
    plan = make_plan(budgets=[1e19], family="qwen2.5", sizes="presets", prior=REFERENCE_LAWS["textless"],
                     base_config=BASE, runs_dir=tmp_path, init_from="ckpt/{preset}")
    kept = {r.shape.preset for r in plan.runs}
    assert kept == {"qwen2.5-0.5b", "qwen2.5-1.5b"}
    assert {n for n, _ in plan.skipped} == {"c1e19-qwen2.5-3b", "c1e19-qwen2.5-7b"}
    assert all("tokens/param" in why for _, why in plan.skipped)
    cfg = plan.runs[0].config
    assert cfg["model"] == {"from": f"ckpt/{plan.runs[0].shape.preset}"}


@pytest.mark.parametrize("kwargs,message", [
    (dict(family="gpt5"), "unknown family"),
    (dict(family="qwen2.5", budgets=[]), "--budgets"),
    (dict(family="qwen2.5", sizes_per_budget=2), "at least 3"),
    (dict(family="qwen2.5", overrides=["train.nonsense=1"]), "train.nonsense"),
    (dict(family="qwen2.5", min_steps=10**9), "no run fits"),
])
def test_plan_errors(tmp_path, kwargs, message):
    args = dict(budgets=[1e19], prior=REFERENCE_LAWS["textless"], base_config=BASE, runs_dir=tmp_path)
    args.update(kwargs)
    with pytest.raises(PlanError, match=message):
        make_plan(**args)


def test_preset_plan_counts_the_tokenizers_vocabulary(tmp_path):
    """A preset trains with the tokenizer's vocabulary (text + K units + 2), not the preset's own:
    the plan's N must be the N the trainer builds, or every budget is off."""
    from megatron_slm.models.presets import PRESETS

    base = {**BASE, "train": {"global_batch_size": 8, "seq_length": 384},
            "data": {"source": "blend", "tokenizer": str(TOKENIZER), "num_units": 100}}
    plan = make_plan(budgets=[1e11], presets=["micro-2x32", "micro-3x64"], sizes="presets",
                     prior=REFERENCE_LAWS["textless"], base_config=base, runs_dir=tmp_path, min_steps=1)
    for run in plan.runs:
        assert run.shape.arch.vocab_size == 512 + 100 + 2
        assert run.params == param_counts(PRESETS[run.shape.preset].replace(vocab_size=614)).total
    synthetic = make_plan(budgets=[1e11], presets=["micro-2x32"], sizes="presets", prior=REFERENCE_LAWS["textless"],
                          base_config={**base, "data": {"source": "synthetic"}}, runs_dir=tmp_path, min_steps=1)
    assert synthetic.runs[0].shape.arch.vocab_size == 512  # synthetic tokens: the preset's vocabulary


def test_init_from_counts_the_checkpoint_and_refuses_another_shape(tmp_path):
    from megatron_slm.models.record import write_model_record
    from megatron_slm.models.presets import PRESETS

    base = {**BASE, "train": {"global_batch_size": 8, "seq_length": 384},
            "data": {"source": "blend", "tokenizer": str(TOKENIZER), "num_units": 100}}
    kw = dict(budgets=[1e11], presets=["micro-2x32", "micro-2x48"], sizes="presets", prior=REFERENCE_LAWS["textless"],
              base_config=base, runs_dir=tmp_path / "runs", min_steps=1, init_from=str(tmp_path / "ckpt" / "{preset}"))
    for p in ("micro-2x32", "micro-2x48"):
        (tmp_path / "ckpt" / p).mkdir(parents=True)
        write_model_record(tmp_path / "ckpt" / p, PRESETS[p].replace(vocab_size=614), 640)
    plan = make_plan(**kw)
    assert [r.config["model"] for r in plan.runs] == [{"from": str(tmp_path / "ckpt" / p)}
                                                      for p in ("micro-2x32", "micro-2x48")]
    # a checkpoint converted from another model under this name would mislabel its runs
    write_model_record(tmp_path / "ckpt" / "micro-2x48", PRESETS["micro-3x64"].replace(vocab_size=614), 640)
    with pytest.raises(PlanError, match=r"micro-2x48.*num_layers 3 != 2.*hidden_size 64 != 48"):
        make_plan(**kw)
    write_model_record(tmp_path / "ckpt" / "micro-2x48", PRESETS["micro-2x48"].replace(vocab_size=1126), 1152)
    with pytest.raises(PlanError, match="vocab_size 1126 != 614"):
        make_plan(**kw)
