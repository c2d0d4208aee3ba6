"""examples/mini_study.sh --tiny: corpus -> units -> text LMs -> plan -> launcher -> collect -> fit -> plot -> report,
end to end with the real tools (a pipeline check; its numbers mean nothing)."""
import csv
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, _env

ARMS = ("text-init", "inter-scratch", "textless")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_tiny_study_fits_every_arm_and_collects_every_run(tmp_path):
    out = tmp_path / "study"
    cmd = ["bash", str(REPO / "examples" / "mini_study.sh"), "--tiny", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for arm in ARMS:
        a = out / "arms" / arm
        planned = list(csv.DictReader(open(a / "plan.csv")))
        rows = list(csv.DictReader(open(a / "results.csv")))
        assert len(planned) >= 6 and sorted(r["run"] for r in rows) == sorted(p["run"] for p in planned)
        for row in rows:  # every run: its loss on the held-out stories and both held-out benchmarks
            assert row["complete"] == "1" and float(row["speech/lm_loss"]) > 0
            assert 0 <= float(row["word_shuffle/accuracy"]) <= 1 and 0 <= float(row["ssc/accuracy"]) <= 1
            assert float(row["budget"]) in {float(p["budget"]) for p in planned}
        fit = json.loads((a / "fit.json").read_text())
        assert fit["runs"] == len(rows) and fit["loss_column"] == "speech/lm_loss" and fit["bootstrap"] == 100
        assert all(math.isfinite(fit[k]) for k in ("E", "A", "B", "alpha", "beta")) and "approach2" in fit
        assert {"isoflop.png", "allocation.png", "frontier.png"} <= {p.name for p in (a / "plots").iterdir()}

    # the text-init arm starts from the converted text LMs, with the unit rows made new again
    for planned in csv.DictReader(open(out / "arms" / "text-init" / "plan.csv")):
        config = yaml.safe_load(open(out / "arms" / "text-init" / "configs" / f"{planned['run']}.yaml"))
        conversion = json.loads((Path(config["model"]["from"]) / "conversion.json").read_text())
        assert not conversion["already_extended"] and conversion["num_units"] == 100
        assert "[checkpoint] loaded" in (out / "logs" / f"text-init-{planned['run']}.log").read_text()

    report = (out / "report" / "REPORT.md").read_text()
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / "report" / image).is_file(), image
    assert all(f"| {arm} |" in report for arm in ARMS) and "## Benchmarks vs compute" in report

    # resumable: a second invocation trains nothing and collects the same table
    before = (out / "arms" / "textless" / "results.csv").read_text()
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    runs = sum(len(list(csv.DictReader(open(out / "arms" / arm / "plan.csv")))) for arm in ARMS)
    assert "[done]" not in again.stdout and again.stdout.count("finished earlier") == runs + 3  # + the text LMs
    assert (out / "arms" / "textless" / "results.csv").read_text() == before
