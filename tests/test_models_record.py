"""What a converted checkpoint, a run directory and an HF export record about their model
(`models/record.py`), and a run whose tokenizer disagrees with the checkpoint's record is refused
before the model is built."""
from __future__ import annotations

import os

import pytest

from conftest import CONVERT, TOKENIZER, one_error_line, run_python, train
from megatron_slm.models import record


def test_a_tokenizer_with_another_K_is_refused_before_the_model_is_built(converted, tmp_path):
    from megatron_slm.vocab import SpeechVocab

    SpeechVocab.from_pretrained(TOKENIZER, num_units=50).save(tmp_path / "tok50")
    proc = train([f"model.from={converted / 'ckpt'}", f"data.tokenizer={tmp_path / 'tok50'}", "data.num_units=50",
                  "train.iters=1"], tmp_path, check=False)
    line = one_error_line(proc)
    assert "K=50" in line and "num_units 100 in the checkpoint" in line and "vs 50 in this run's tokenizer" in line, line
    assert "[train]" not in proc.stdout  # refused by the plan, before any model existed


@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
def test_exports_and_run_dirs_record_what_their_ids_mean(converted, tmp_path):
    recorded = record.read_identity(converted / "ckpt")
    assert recorded["vocab"]["num_units"] == 100 and recorded["units"] is None  # a text LM has no units yet
    run = tmp_path / "run"
    rel = os.path.relpath(converted / "ckpt", tmp_path)
    train([f"model.from={rel}", "train.iters=1", "checkpoint.save=run"], tmp_path)
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["from"] == str((converted / "ckpt").resolve())  # absolute: readable from anywhere
    assert cfg["checkpoint"]["save"] == str(run.resolve())
    assert record.read_identity(run)["vocab"] == recorded["vocab"]
    run_python([CONVERT, "mcore-to-hf", "--mcore-dir", run, "--out", tmp_path / "hf"], cwd=tmp_path)
    assert record.read_identity(tmp_path / "hf")["vocab"] == recorded["vocab"]
