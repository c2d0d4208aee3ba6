"""tools/scaling.py report: fitted sweeps (arms) side by side in a self-contained Markdown report."""
import json
import re

import numpy as np
import pytest

from megatron_slm.commands import scaling as cli
from megatron_slm.scaling.fit import REFERENCE_LAWS, LossLaw, simulate_sweep
from megatron_slm.scaling.results import write_results

BUDGETS = (1e18, 4e18, 1.6e19)


def _arm(directory, law: LossLaw, accuracy_slope: float, seed: int) -> None:
    """An arm as tools/scaling.py leaves it: results.csv (collect), fit.json (fit), plots/ (plot)."""
    s = simulate_sweep(law, BUDGETS, sizes_per_budget=5, span=4.0, noise=0.003, seed=seed)
    rows = []
    for i in range(len(s["loss"])):
        n, d = float(s["params"][i]), float(s["tokens"][i])
        rows.append({"run": f"r{i}", "params": n, "non_embedding_params": n, "tokens": d, "compute": 6 * n * d,
                     "loss": float(s["loss"][i]), "budget": float(s["budget"][i]),
                     "ssc/accuracy": 0.5 + accuracy_slope * np.log10(s["budget"][i] / 1e17)})
    directory.mkdir(parents=True)
    write_results(directory / "results.csv", rows)
    assert cli.main(["fit", "--runs", str(directory / "results.csv"), "--bootstrap", "50",
                     "--out", str(directory / "fit.json")]) == 0
    assert cli.main(["plot", "--runs", str(directory / "results.csv"), "--fit", str(directory / "fit.json"),
                     "--out", str(directory / "plots")]) == 0


def test_report_tables_and_figures(tmp_path, capsys):
    _arm(tmp_path / "a", REFERENCE_LAWS["chinchilla"], 0.05, seed=1)
    _arm(tmp_path / "b", REFERENCE_LAWS["textless"], 0.02, seed=2)
    notes = tmp_path / "notes.md"
    notes.write_text("Settings: two simulated arms.\n")
    out = tmp_path / "report" / "REPORT.md"
    assert cli.main(["report", "--arm", f"fast={tmp_path / 'a'}", "--arm", f"slow={tmp_path / 'b'}",
                     "--notes", str(notes), "--title", "Two arms", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("# Two arms\n\nSettings: two simulated arms.")
    fit_a = json.loads((tmp_path / "a" / "fit.json").read_text())
    lo, hi = fit_a["ci"]["a"]
    row = next(line for line in text.splitlines() if line.startswith("| fast |"))
    assert f"{fit_a['a']:.3g} [{lo:.3g}, {hi:.3g}]" in row and f"{fit_a['approach2']['a']:.3g} [" in row
    assert text.count("| fast | ") >= 1 + len(BUDGETS) and "| slow | " in text
    # every image the report shows is next to it
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"arms_frontier.png", "arms_ssc_accuracy.png", "fast_isoflop.png", "slow_allocation.png"} <= set(images)
    assert all((out.parent / name).stat().st_size > 5000 for name in images)
    # the benchmark table: the best accuracy per budget, per arm
    assert f"| {BUDGETS[-1]:.3g} | {0.5 + 0.05 * np.log10(160):.3f} / " in text


def test_report_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["report", "--arm", "no-directory", "--out", str(tmp_path / "r.md")]) == 2
    assert "expected NAME=DIR" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["report", "--arm", f"x={tmp_path / 'empty'}", "--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fit.json does not exist" in err
