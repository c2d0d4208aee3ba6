"""GenPPL and Auto-BLEU: hand-computed Auto-BLEU, the text LM's NLL against a manual computation,
and the whole generative eval (generate -> vocode -> Whisper -> text LM -> report with CIs)
through tools/eval_slm.py with tiny random Whisper and LM models saved in the test."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from megatron_slm.commands.eval_slm import main as eval_main
from megatron_slm.eval.generative import (TextLMScorer, WhisperASR, auto_bleu, length_matched_unit_autobleu,
                                           summarize_generation, word_tokenizer)
from megatron_slm.generate.sampling import GenerationError
from megatron_slm.testing.tiny_slm import CORPUS, TOKENIZER, make_tiny_slm
from megatron_slm.testing.tiny_whisper import make_tiny_whisper

K = 100


def test_auto_bleu_matches_hand_computed_values():
    _, regex = word_tokenizer("regex")
    # bigrams: the cat | cat sat | sat on | on the | the cat | cat sat -> 4 of 6 occur twice
    assert auto_bleu("the cat sat on the cat sat", 2, regex) == pytest.approx(4 / 6)
    # a b | b . | . a | a b | b . -> 4 of 5 repeated (punctuation is a word)
    assert auto_bleu("a b. a b.", 2, regex) == pytest.approx(4 / 5)
    assert auto_bleu("Lily had a big red ball", 2, regex) == 0.0
    assert auto_bleu("hello", 2, regex) == 0.0 and auto_bleu("", 2, regex) == 0.0
    assert auto_bleu("go go go", 1, regex) == 1.0
    assert regex("Don't stop, Lily!") == ["Don't", "stop", ",", "Lily", "!"]
    try:
        import nltk  # noqa: F401
    except ImportError:
        assert word_tokenizer("auto")[0] == "regex"
        with pytest.raises(GenerationError, match="pip install nltk"):
            word_tokenizer("nltk")
    else:
        name, tok = word_tokenizer("auto")
        assert name == "nltk" and auto_bleu("the cat sat on the cat sat", 2, tok) == pytest.approx(4 / 6)


def test_genppl_summary_is_exp_of_the_mean_nll():
    rows = [{"nll": 1.0, "autobleu": 0.5}, {"nll": 2.0, "autobleu": 0.0}, {"nll": None, "autobleu": 0.0}]
    s = summarize_generation("genppl", rows, n_boot=200)["genppl"]
    assert s["metric"] == "genppl" and s["value"] == pytest.approx(math.exp(1.5))
    assert s["n"] == 2 and s["skipped"] == 1
    assert math.exp(1.0) <= s["ci95"][0] <= s["value"] <= s["ci95"][1] <= math.exp(2.0)
    assert s["parts"]["autobleu"]["value"] == pytest.approx(1 / 6) and s["parts"]["autobleu"]["n"] == 3
    assert summarize_generation("autobleu_text", rows)["autobleu_text"]["metric"] == "autobleu"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from megatron_slm.testing.random_hf import make_random_hf_model

    root = tmp_path_factory.mktemp("genmetrics")
    _, hf = make_tiny_slm(root / "slm", num_units=K)
    whisper = make_tiny_whisper(root / "whisper")
    from transformers import AutoTokenizer

    lm = make_random_hf_model(root / "lm", "llama", TOKENIZER, vocab_size=len(AutoTokenizer.from_pretrained(TOKENIZER)),
                              hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True)
    return root, hf, whisper, lm


def test_text_lm_nll_and_whisper_transcripts(models):
    root, hf, whisper, lm = models
    scorer = TextLMScorer.from_dir(str(lm))
    text = "Once upon a time, a little girl"
    ids = scorer.tok(text, return_tensors="pt")["input_ids"]
    assert ids[0, 0] == scorer.tok.bos_token_id  # the LM's tokenizer adds BOS: every word is predicted
    with torch.no_grad():
        logits = scorer.model(input_ids=ids).logits[0]
    manual = -torch.log_softmax(logits[:-1].float(), -1).gather(1, ids[0, 1:, None]).mean()
    assert scorer.mean_nll([text, ""]) == [pytest.approx(float(manual), rel=1e-5), None]
    asr = WhisperASR.from_dir(str(whisper), max_new_tokens=12)
    import numpy as np

    texts = asr.transcribe([np.random.default_rng(0).normal(0, 0.1, 24000).astype(np.float32),
                            np.zeros(8000, np.float32)], sample_rate=16000)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with pytest.raises(GenerationError, match="--asr-model .*cannot load"):
        WhisperASR.from_dir(str(root / "missing"))


def test_eval_slm_runs_generative_tasks_end_to_end(models, tmp_path, capsys):
    root, hf, whisper, lm = models
    data = tmp_path / "eval"
    data.mkdir()
    lines = (CORPUS / "units.jsonl").read_text().splitlines()[:4]
    for task in ("genppl", "genppl_text"):
        (data / f"{task}.jsonl").write_text("\n".join(lines) + "\n")
        shutil.copy(CORPUS / "units.jsonl.meta.json", data / f"{task}.jsonl.meta.json")
    # the prompts' sidecar names the codebook relative to itself: the Griffin-Lim vocoder uses the corpus'
    args = ["--hf-dir", str(hf), "--tasks", "genppl,genppl_text", "--data", str(data),
            "--vocoder", str(CORPUS / "units.jsonl"), "--asr-model", str(whisper), "--ppl-model", str(lm),
            "--alignments", str(CORPUS / "alignments.jsonl"), "--max-new-tokens", "12", "--bootstrap", "100",
            "--out", str(tmp_path / "report.json"), "--item-scores", str(tmp_path / "items.jsonl")]
    assert eval_main(args) == 0
    out = capsys.readouterr().out
    assert "genppl" in out and "autobleu" in out and "95% CI" in out
    report = json.loads((tmp_path / "report.json").read_text())["tasks"]
    for task in ("genppl", "genppl_text"):
        e = report[task]
        assert e["metric"] == "genppl" and e["n"] + e["skipped"] == 4
        if e["n"]:
            assert math.isfinite(e["value"]) and e["value"] > 1 and e["ci95"][0] <= e["value"] <= e["ci95"][1]
        assert 0.0 <= e["parts"]["autobleu"]["value"] <= 1.0 and e["parts"]["autobleu"]["n"] == 4
    assert report["genppl_text"]["n"] >= 1  # text continuations are scored directly (no ASR)
    rows = [json.loads(l) for l in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"genppl", "genppl_text"} and len(rows) == 8
    assert all("transcript" in r and "autobleu" in r for r in rows)
    # a speech task without a vocoder / ASR is refused with one line
    assert eval_main(["--hf-dir", str(hf), "--tasks", "genppl", "--data", str(data), "--ppl-model", str(lm)]) == 1
    assert "give --vocoder" in capsys.readouterr().err
    assert eval_main(["--hf-dir", str(hf), "--tasks", "autobleu", "--data", str(data)]) == 1
    assert "autobleu.jsonl does not exist" in capsys.readouterr().err


def test_unit_level_autobleu_task(models, tmp_path, capsys):
    """autobleu_units: the Auto-BLEU of each generated speech-unit sequence itself (no vocoder, no
    ASR), labelled unit-level; per-continuation values are auto_bleu(units, 2) and a fixed seed
    gives the same report twice."""
    root, hf, whisper, lm = models
    rows = [{"autobleu": 0.5, "autobleu_n": 2}, {"autobleu": 0.0, "autobleu_n": 2}]
    e = summarize_generation("autobleu_units", rows, n_boot=100)["autobleu_units"]
    assert e["metric"] == "unit_autobleu" and e["value"] == pytest.approx(0.25) and e["n"] == 2
    assert "unit-level" in e["note"] and "not comparable" in e["note"]
    assert auto_bleu([5, 7, 5, 7, 9], 2, list) == pytest.approx(2 / 4)  # 5 7 | 7 5 | 5 7 | 7 9
    # a codec's frames (c0 c1 per frame, K = 10): only the semantic codebook's codes are words
    from megatron_slm.eval.generative import unit_words
    from megatron_slm.vocab import UnitInventory

    frames = [3, 14, 5, 17, 3, 11, 5, 12]  # semantic 3 5 3 5, acoustic codes all different
    assert unit_words(frames, UnitInventory(10, 2)) == [3, 5, 3, 5] and unit_words(frames, None) == frames
    assert auto_bleu(unit_words(frames, UnitInventory(10, 2)), 2, list) == pytest.approx(2 / 3)
    data = tmp_path / "eval"
    data.mkdir()
    (data / "autobleu_units.jsonl").write_text("\n".join((CORPUS / "units.jsonl").read_text().splitlines()[:3]) + "\n")
    shutil.copy(CORPUS / "units.jsonl.meta.json", data / "autobleu_units.jsonl.meta.json")
    reports = []
    for run in ("a", "b"):
        args = ["--hf-dir", str(hf), "--tasks", "autobleu_units", "--data", str(data), "--max-new-tokens", "30",
                "--seed", "0", "--bootstrap", "100", "--out", str(tmp_path / f"{run}.json"),
                "--item-scores", str(tmp_path / f"{run}.jsonl")]
        assert eval_main(args) == 0
        reports.append(json.loads((tmp_path / f"{run}.json").read_text())["tasks"]["autobleu_units"])
    out = capsys.readouterr().out
    assert "autobleu_units [unit_autobleu]" in out
    assert reports[0] == reports[1] and reports[0]["n"] == 3
    rows = [json.loads(l) for l in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["level"] == "units" and r["units"] for r in rows)
    assert all(r["autobleu"] == pytest.approx(auto_bleu(r["units"], 2, list)) for r in rows)
    assert reports[0]["value"] == pytest.approx(sum(r["autobleu"] for r in rows) / 3)
    # the continuations' length and stop reasons stand beside it (Auto-BLEU depends on length)
    gen = reports[0]["generated"]
    assert gen["mean_new_tokens"] == pytest.approx(sum(r["num_generated"] for r in rows) / 3)
    assert sum(gen["stops"].values()) == 3 and set(gen["stops"]) <= {"eos", "modality_switch", "length", "context"}


def test_length_matched_unit_autobleu():
    """Two models' continuations of the same prompts, each pair cut to the shorter one: a model that
    only stops earlier is not counted as repeating less."""
    a = [{"id": "p1", "units": [1, 2, 1, 2, 1, 2, 1, 2]}, {"id": "p2", "units": [3, 4, 5, 6]}, {"id": "p3", "units": [7, 7]}]
    b = [{"id": "p1", "units": [1, 2, 3, 4]}, {"id": "p2", "units": [3, 4, 3, 4, 9]}, {"id": "p3", "units": [7]}]
    m = length_matched_unit_autobleu(a, b, n=2, n_boot=100)
    # p1 cut to 4: a 1 2 1 2 -> 2 of 3 repeat, b 1 2 3 4 -> 0; p2 cut to 4: a 0, b 3 4 3 4 -> 2 of 3; p3: 1 unit, out
    assert m["too_short"] == 1 and m["a"]["n"] == m["b"]["n"] == m["b_minus_a"]["n"] == 2
    assert m["a"]["value"] == pytest.approx(1 / 3) and m["b"]["value"] == pytest.approx(1 / 3)
    assert m["b_minus_a"]["value"] == pytest.approx(0.0)
    assert auto_bleu([1, 2, 1, 2, 1, 2, 1, 2], 2, list) == 1.0  # uncut, a would look far more repetitive
