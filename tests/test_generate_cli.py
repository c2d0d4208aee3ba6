"""generate.py's arguments and outputs: every sampling parameter finite and in range, --limit and
--ids that cannot silently drop or repeat prompts, outputs never on the prompts or the model,
and --resume that keeps rows only when they were made by the same model and settings."""
from __future__ import annotations

import json
import os

import pytest

from megatron_slm.commands.generate import main as generate_main
from megatron_slm.testing.tiny_slm import CORPUS, make_tiny_slm

K = 100
UNITS = str(CORPUS / "units.jsonl")


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    _, hf = make_tiny_slm(tmp_path_factory.mktemp("gen"), num_units=K)
    return hf


def gen(capsys, hf, out, *extra):
    code = generate_main(["--hf-dir", str(hf), "--prompt-units", UNITS, "--prompt-seconds", "2", "--limit", "3",
                          "--max-new-tokens", "8", "--out", str(out), *map(str, extra)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err.strip()


@pytest.mark.parametrize("args, message", [
    (["--temperature", "inf"], "temperature must be a finite number"),
    (["--temperature", "3.5e38"], "temperature must be a finite number"),
    (["--top-p", "nan"], "top_p must be a finite number"),
    (["--repetition-penalty", "inf"], "repetition_penalty must be a finite number"),
    (["--limit", "-1"], "--limit must be >= 1"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--ids", "s01_01,s01_02,s01_01"], "--ids names 's01_01' more than once"),
])
def test_bad_settings_are_refused_before_anything_is_written(hf, tmp_path, capsys, args, message):
    code, err = gen(capsys, hf, tmp_path / "rows.jsonl", *args)
    assert code == 1 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "rows.jsonl").exists()


def test_outputs_never_land_on_the_prompts_or_the_model(hf, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat sat\n")
    code = generate_main(["--hf-dir", str(hf), "--prompt-text", str(prompts), "--out", str(prompts), "--force"])
    assert code == 1 and "is the input" in capsys.readouterr().err
    assert prompts.read_text() == "the cat sat\n"
    code, err = gen(capsys, hf, hf / "rows.jsonl", "--force")
    assert code == 1 and "is inside the input" in err, err
    assert not (hf / "rows.jsonl").exists()
    audio = CORPUS / "audio"  # --wav-dir onto the prompt audio: refused before any unit is extracted
    code = generate_main(["--hf-dir", str(hf), "--prompt-audio", str(audio), "--out", str(tmp_path / "a.jsonl"),
                          "--vocoder", str(tmp_path / "voc"), "--wav-dir", str(audio)])
    assert code == 1 and "--wav-dir" in capsys.readouterr().err


def test_resume_keeps_only_rows_made_the_same_way(hf, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    assert gen(capsys, hf, out, "--greedy", "--limit", "2")[0] == 0
    first = out.read_text()
    code, err = gen(capsys, hf, out, "--greedy", "--resume", "--max-new-tokens", "9")
    assert code == 1 and "was made with another settings" in err and f"{out}:1" in err, err
    code, err = gen(capsys, hf, out, "--resume", "--seed", "5")  # sampling, not greedy
    assert code == 1 and "another settings" in err, err
    assert out.read_text() == first  # nothing appended by a refused resume
    assert gen(capsys, hf, out, "--greedy", "--resume")[0] == 0  # the same generation continues
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3


def test_messages_point_at_the_real_cause(hf, tmp_path, capsys):
    fifo = tmp_path / "prompt.wav"
    os.mkfifo(fifo)
    code = generate_main(["--hf-dir", str(hf), "--prompt-audio", str(fifo), "--kmeans", str(CORPUS / "km_mel100.npy"), "--out", str(tmp_path / "a.jsonl")])
    err = capsys.readouterr().err
    assert code == 1 and "not a regular file" in err and "no such" not in err, err
    long = tmp_path / "long.txt"
    long.write_text("the cat sat on the mat " * 400 + "\n")  # far beyond the 1024-token context
    code = generate_main(["--hf-dir", str(hf), "--prompt-text", str(long), "--out", str(tmp_path / "t.jsonl")])
    err = capsys.readouterr().err
    assert code == 1 and "text must be cut in the prompt file" in err, err


def test_a_truncated_model_file_is_one_line_naming_the_directory(hf, tmp_path, capsys):
    import shutil

    broken = tmp_path / "hf"
    shutil.copytree(hf, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code = generate_main(["--hf-dir", str(broken), "--prompt-units", UNITS, "--limit", "1", "--out",
                          str(tmp_path / "rows.jsonl")])
    err = capsys.readouterr().err
    assert code == 1 and f"{broken}: the model weights are unreadable" in err and "Traceback" not in err, err


def test_a_silent_prompt_is_kept_with_a_warning(hf, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "silent.wav", np.zeros(16000 * 2, dtype=np.float32), 16000)
    code = generate_main(["--hf-dir", str(hf), "--prompt-audio", str(tmp_path / "silent.wav"), "--kmeans",
                          str(CORPUS / "km_mel100.npy"), "--max-new-tokens", "4", "--out", str(tmp_path / "s.jsonl")])
    err = capsys.readouterr().err
    assert code == 0 and "warning: prompt audio" in err and "silent" in err, err
