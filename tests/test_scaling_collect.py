"""collect -> fit -> plot through the CLI, on run directories in the trainer's format."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import PRETRAIN, REPO, TINY_CPU, run_torchrun
from megatron_slm.config import load_config
from megatron_slm.models.flops import param_counts
from megatron_slm.models.presets import PRESETS
from megatron_slm.scaling.collect import collect_run, RunSkipped
from megatron_slm.scaling.fit import REFERENCE_LAWS

_spec = importlib.util.spec_from_file_location("scaling_cli", REPO / "tools" / "scaling.py")
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)

LAW = REFERENCE_LAWS["textless"]


def _write_run(run_dir: Path, layers: int, hidden: int, steps: int, loss: float, *, done_steps=None,
               accuracy=None, extra_lines: str = "") -> None:
    """A run directory as pretrain_slm.py leaves it (docs/internals.md)."""
    run_dir.mkdir(parents=True)
    cfg = load_config(TINY_CPU, [f"model.num_layers={layers}", f"model.hidden_size={hidden}",
                                 f"model.ffn_hidden_size={hidden * 3}", f"train.iters={steps}",
                                 f"checkpoint.save={run_dir}"])
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    arch = PRESETS["tiny"].replace(num_layers=layers, hidden_size=hidden, ffn_hidden_size=hidden * 3)
    (run_dir / "slm_model.json").write_text(json.dumps({"arch": vars(arch), "padded_vocab_size": 1024}))
    tokens_per_step = cfg.train.global_batch_size * cfg.train.seq_length
    done = steps if done_steps is None else done_steps
    lines = [{"iteration": i, "consumed_tokens": i * tokens_per_step, "lm_loss": loss + 1.0 / i,
              "consumed_speech_tokens": i * tokens_per_step // 4, "speech_loss": None} for i in range(1, done + 1)]
    lines.append({"validation": True, "iteration": done, "consumed_tokens": done * tokens_per_step,
                  "lm_loss": loss, "speech_loss": loss * 1.1, "text_loss": loss * 0.9, "ls/lm_loss": loss * 1.2})
    if accuracy is not None:
        lines.append({"eval": True, "iteration": done, "ssc/accuracy": accuracy})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines) + extra_lines)


def _sweep_runs(root: Path) -> None:
    """3 budgets x 4 shapes with losses from the textless law; a few broken runs."""
    tokens_per_step = 8 * 64
    shapes = [(2, 32), (4, 64), (6, 96), (8, 128)]
    for c in (1e10, 4e10, 1.6e11):
        for layers, hidden in shapes:
            arch = PRESETS["tiny"].replace(num_layers=layers, hidden_size=hidden, ffn_hidden_size=hidden * 3)
            n = param_counts(arch).total
            steps = max(1, round(c / (6 * n) / tokens_per_step))
            d = steps * tokens_per_step
            _write_run(root / f"c{c:.0e}-L{layers}", layers, hidden, steps, float(LAW.loss(n, d)),
                       accuracy=0.5 + 0.01 * np.log10(c))
    _write_run(root / "unfinished", 2, 32, 50, 3.0, done_steps=10)
    (root / "not-started").mkdir()
    _write_run(root / "corrupt", 2, 32, 5, 3.0, extra_lines='{"iteration": 6, "lm_lo\n')


def test_collect_run_reads_trainer_format(tmp_path):
    _write_run(tmp_path / "r", 4, 64, 3, 2.5, accuracy=0.61)
    row = collect_run(tmp_path / "r")
    counts = param_counts(PRESETS["tiny"].replace(ffn_hidden_size=192))
    assert row["params"] == counts.total and row["non_embedding_params"] == counts.non_embedding
    assert row["tokens"] == 3 * 512 and row["compute"] == 6.0 * counts.total * 3 * 512
    assert row["loss"] == 2.5 and row["speech_loss"] == pytest.approx(2.75) and row["ls/lm_loss"] == 3.0
    assert row["speech_tokens"] == 3 * 512 // 4 and row["ssc/accuracy"] == 0.61 and row["complete"] == 1
    _write_run(tmp_path / "u", 4, 64, 30, 2.5, done_steps=5)
    with pytest.raises(RunSkipped, match="step 5 of 30"):
        collect_run(tmp_path / "u")
    assert collect_run(tmp_path / "u", include_incomplete=True)["complete"] == 0


def test_cli_collect_fit_plot(tmp_path, capsys):
    _sweep_runs(tmp_path / "runs")
    csv_path, fit_path, plots = tmp_path / "results.csv", tmp_path / "fit.json", tmp_path / "plots"
    assert cli.main(["collect", "--runs", str(tmp_path / "runs" / "*"), "--out", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "collected 12 runs, skipped 3" in out
    assert "unfinished: incomplete" in out and "not-started: missing config.yaml" in out
    assert "corrupt: metrics.jsonl line 7: not valid JSON" in out
    assert cli.main(["fit", "--runs", str(csv_path), "--out", str(fit_path), "--predict", "1e12"]) == 0
    out = capsys.readouterr().out
    report = json.loads(fit_path.read_text())
    for key in ("E", "A", "B", "alpha", "beta", "a", "b", "G"):
        assert np.isfinite(report[key])
    # noise-free losses from the law: the fit finds it again, and approach 2 runs on 3 budgets
    assert abs(report["alpha"] - LAW.alpha) < 0.02 and abs(report["E"] - LAW.E) < 0.05
    assert report["isoflop_sets"] == 3 and "ssc/accuracy" in report["metrics"]
    assert "C = 1e+12 FLOPs: N_opt = " in out and "predicted loss" in out
    assert cli.main(["plot", "--runs", str(csv_path), "--fit", str(fit_path), "--compare", "textless,chinchilla",
                     "--out", str(plots)]) == 0
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert pngs == ["allocation.png", "frontier.png", "isoflop.png", "metric_ssc_accuracy.png"]
    assert all((plots / p).stat().st_size > 10_000 for p in pngs)


def _set_cell(text: str, row: int, col: int, value: str) -> str:
    lines = text.splitlines()
    cells = lines[row].split(",")
    cells[col] = value
    lines[row] = ",".join(cells)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("loss", "los", 1), "missing column 'loss'"),
    (lambda t: _set_cell(t, 1, 5, "-2.0"), "row 1 (run 'r0'): column 'loss' = '-2.0' must be positive"),
    (lambda t: _set_cell(t, 3, 1, ""), "row 3 (run 'r2'): column 'params' is empty"),
    (lambda t: "\n".join(t.splitlines()[:4]) + "\n", "3 usable runs, a scaling-law fit (5 coefficients) needs at least 6"),
    (lambda t: _set_cell(t, 2, 3, "abc"), "row 2 (run 'r1'): column 'tokens' = 'abc' is not a number"),
    (lambda t: _set_cell(t, 2, 1, "1e308"), "row 2 (run 'r1'): column 'params' = '1e308' is not finite or beyond"),
    (lambda t: t + t.splitlines()[3] + "\n", "row 9: run 'r2' is already row 3 (a duplicate row)"),
])
def test_cli_bad_results_give_one_line(tmp_path, capsys, edit, message):
    lines = ["run,params,non_embedding_params,tokens,compute,loss"]
    for i in range(8):
        n, d = 1e6 * (i + 1), 1000 * (i + 1)
        lines.append(f"r{i},{n:g},{n:g},{d:g},{6 * n * d:g},{float(LAW.loss(n, d))!r}")
    path = tmp_path / "results.csv"
    path.write_text(edit("\n".join(lines) + "\n"))
    assert cli.main(["fit", "--runs", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(path) in err


def test_cli_usage_errors(tmp_path, capsys):
    assert cli.main(["plan", "--family", "nope", "--budgets", "1e19", "--out", str(tmp_path)]) == 2
    assert "unknown family 'nope'" in capsys.readouterr().err
    assert cli.main(["plan", "--family", "qwen2.5", "--budgets", "1e19,x", "--out", str(tmp_path)]) == 2
    assert "--budgets" in capsys.readouterr().err
    assert cli.main(["collect", "--runs", str(tmp_path / "none*"), "--out", str(tmp_path / "r.csv")]) == 2
    assert "no finished run" in capsys.readouterr().err
    assert cli.main(["fit", "--from-fit", str(tmp_path / "missing.json"), "--predict", "1e20"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_plan_config_trains_and_collects(tmp_path, capsys):
    """A plan-generated config trains with the real trainer (1 CPU process) and collects."""
    n = param_counts(PRESETS["tiny"]).total
    budget = 6 * n * 3 * 512  # three steps of 8 x 64 tokens
    sweep = tmp_path / "sweep"
    assert cli.main(["plan", "--presets", "tiny", "--sizes", "presets", "--budgets", f"{budget!r}",
                     "--base-config", str(TINY_CPU), "--set", "train.eval_iters=1", "--min-steps", "1",
                     "--min-tokens-per-param", "0", "--out", str(sweep)]) == 0
    config = (sweep / "configs.txt").read_text().split()[0]
    run_torchrun(1, PRETRAIN, ["--config", config], cwd=tmp_path)
    assert cli.main(["collect", "--runs", str(sweep / "runs" / "*"), "--plan", str(sweep / "plan.csv"),
                     "--out", str(sweep / "results.csv")]) == 0
    assert "collected 1 runs, skipped 0" in capsys.readouterr().out
    import csv

    (row,) = list(csv.DictReader(open(sweep / "results.csv")))
    assert int(row["params"]) == n and int(row["tokens"]) == 3 * 512 and int(row["iteration"]) == 3
    assert float(row["budget"]) == pytest.approx(budget) and float(row["compute"]) == pytest.approx(budget)
    assert 0 < float(row["loss"]) < 20 and row["complete"] == "1"


def test_one_dataset_run_names_its_loss_like_a_blend(tmp_path):
    """The trainer logs `<dataset>/lm_loss` only for blends; collect gives a one-dataset run the
    same column, so a speech-only arm and an interleaved arm fit the same loss."""
    _write_run(tmp_path / "r", 2, 32, 3, 2.5)
    cfg = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    cfg["data"].update(source="blend", blend=[{"path": str(tmp_path / "data" / "speech.bin"), "kind": "speech"}])
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(cfg))
    row = collect_run(tmp_path / "r")
    assert row["speech/lm_loss"] == 2.5 and row["ls/lm_loss"] == 3.0
    cfg["data"]["blend"][0]["name"] = "spoken"
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert collect_run(tmp_path / "r")["spoken/lm_loss"] == 2.5


def _plot_figures(monkeypatch):
    from megatron_slm.scaling import plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    return plots, figures


def test_isoflop_plot_has_a_colour_bar_not_a_legend_per_budget(monkeypatch):
    from megatron_slm.scaling.analysis import Sweep, analyse
    from megatron_slm.scaling.fit import simulate_sweep
    from megatron_slm.scaling.results import Results, group_isoflop

    s = simulate_sweep(LAW, np.geomspace(1e18, 1e21, 14), sizes_per_budget=5, span=4.0, noise=0.0)
    rows = [{"run": f"r{i}", "params": repr(float(n)), "tokens": repr(float(d)), "loss": repr(float(l)),
             "budget": repr(float(b))}
            for i, (n, d, l, b) in enumerate(zip(s["params"], s["tokens"], s["loss"], s["budget"]))]
    results = Results("sim.csv", rows, ["run", "params", "tokens", "loss", "budget"])
    report = analyse(results)
    plots, figures = _plot_figures(monkeypatch)
    sweep = Sweep(s["params"], s["tokens"], s["loss"], s["params"] * s["tokens"] * 6,
                  group_isoflop(s["compute"], s["budget"]), [r["run"] for r in rows])
    plots.plot_isoflop(sweep, report, None)
    (fig,) = figures
    main, bar = fig.axes  # the plot and its colour bar
    assert main.get_legend() is None and bar.get_ylabel() == "compute budget C (FLOPs)"
    assert len(main.collections) >= 14  # every budget drawn, 14 of them
