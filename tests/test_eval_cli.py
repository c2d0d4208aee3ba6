"""eval_slm's outputs (--out, --item-scores, --submission) are checked before anything is scored:
never on the items, the benchmarks or the model directory, never over another output, and an
existing file only with --force; each refusal is one line naming the flag and the path."""
from __future__ import annotations

import pytest

from conftest import TOKENIZER  # the checks come before the model is loaded
from megatron_slm.commands import eval_slm


@pytest.fixture
def items(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"format": "megatron-slm-eval-items"}\n')
    return path


def run(capsys, *args):
    code = eval_slm.main(["--hf-dir", str(TOKENIZER), "--num-units", "100", *map(str, args)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip()


@pytest.mark.parametrize("flags, message", [
    (lambda t, i: ["--items", i, "--out", i, "--force"], "--out {i}: it is the input {i}"),
    (lambda t, i: ["--items", i, "--item-scores", i], "--item-scores {i}: it is the input {i}"),
    (lambda t, i: ["--items", i, "--out", TOKENIZER / "report.json", "--force"], "is inside the input"),
    (lambda t, i: ["--tasks", "ssc", "--data", t, "--submission", t / "sub"], "is inside the input"),
    (lambda t, i: ["--items", i, "--out", t / "r.json", "--item-scores", t / "r.json"], "name the same file"),
    (lambda t, i: ["--items", i, "--out", t / "reports"], "is a directory"),
    (lambda t, i: ["--items", i, "--submission", i.with_name("taken")], "exists and is not a directory"),
    (lambda t, i: ["--items", i, "--out", i.with_name("taken")], "already exists (pass --force"),
])
def test_outputs_never_land_on_inputs_or_existing_files(tmp_path, items, capsys, flags, message):
    (tmp_path / "taken").write_text("an earlier report")
    (tmp_path / "reports").mkdir()
    before = items.read_bytes()
    code, err = run(capsys, *flags(tmp_path, items))
    assert code == 1 and len(err.splitlines()) == 1, err
    assert message.format(i=items) in err, err
    assert items.read_bytes() == before and (tmp_path / "taken").read_text() == "an earlier report"


def test_a_truncated_model_file_is_one_line_naming_the_directory(tmp_path, capsys):
    from megatron_slm.eval.items import Candidate, Item, write_items
    from megatron_slm.testing.random_hf import make_random_hf_model

    model = make_random_hf_model(tmp_path / "hf", "llama", TOKENIZER, hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                 vocab_size=1024)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    items = tmp_path / "items.jsonl"
    write_items(items, "x", [Item(id="a", task="x", positive=Candidate(text="a cat"),
                                  negatives=[Candidate(text="cat a")])], None)
    code = eval_slm.main(["--hf-dir", str(model), "--num-units", "100", "--items", str(items)])
    err = capsys.readouterr().err
    assert code == 1 and f"{model}: the model weights are unreadable" in err and "Traceback" not in err, err
