"""In-training evaluation through the real trainer: a tiny Megatron model trained on the bundled
corpus' speech reports word-shuffle accuracy far above chance in metrics.jsonl, and
tools/eval_slm.py on the saved checkpoint reproduces it; benchmark units from another extractor
than the run's training data are refused."""
from __future__ import annotations

import json

import pytest

from megatron_slm.eval.items import read_items, write_items

from conftest import CORPUS, REPO, TINY_CPU, TOKENIZER, run_python


@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
def test_trainer_logs_eval_accuracy_and_cli_reproduces_it(tmp_path, monkeypatch):
    # an in-process converter run earlier in the session leaves RANK/MASTER_PORT/... in os.environ
    # (init_distributed sets them for a single process); children must pick their own
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    run_python(["tools/preprocess_data.py", "speech", "--tokenizer", TOKENIZER, "--units", CORPUS / "units.jsonl",
                "--out-prefix", tmp_path / "speech", "--quiet"], cwd=REPO)
    run_python(["tools/prepare_eval_data.py", "word-shuffle", "--units-file", CORPUS / "units.jsonl",
                "--alignments", CORPUS / "alignments.jsonl", "--out", tmp_path / "eval" / "word_shuffle.jsonl"],
               cwd=REPO)
    run = tmp_path / "run"
    run_python(["pretrain_slm.py", "--config", TINY_CPU, "data.source=blend",
                f"data.blend=[{{path: {tmp_path / 'speech'}, kind: speech}}]", f"data.tokenizer={TOKENIZER}",
                "data.num_units=100", "data.split=100,0,0", "eval.tasks=[word_shuffle]",
                f"eval.data={tmp_path / 'eval'}", "eval.interval=20", "train.iters=40", "train.seq_length=128",
                "train.micro_batch_size=8", "train.global_batch_size=8", f"checkpoint.save={run}"], cwd=REPO)
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    evals = [l for l in lines if l.get("eval")]
    assert [e["iteration"] for e in evals][:2] == [20, 40]
    final = evals[-1]["word_shuffle/accuracy"]
    assert final >= 0.8, evals

    out = run_python(["tools/eval_slm.py", "--mcore-dir", run, "--items", tmp_path / "eval" / "word_shuffle.jsonl",
                      "--out", tmp_path / "report.json"], cwd=REPO)
    report = json.loads((tmp_path / "report.json").read_text())["tasks"]["word_shuffle"]
    assert abs(report["accuracy"] - final) < 1e-9 and report["n"] == 43, out.stdout

    # the run's training data (dataset sidecar) pins the units identity
    ws = read_items(tmp_path / "eval" / "word_shuffle.jsonl")
    write_items(tmp_path / "other.jsonl", "x", ws.items[:2], dict(ws.unit_identity, sha256="f" * 64))
    bad = run_python(["tools/eval_slm.py", "--mcore-dir", run, "--items", tmp_path / "other.jsonl"], cwd=REPO,
                     check=False)
    assert bad.returncode == 1 and "different extractor" in bad.stderr and "Traceback" not in bad.stderr
