"""Generation from a demo-sized model: the HF KV-cache path against a cache-free reference, the
modality of what comes out, determinism and seeded reproducibility through the CLI, bad input,
and (slow, real torchrun + gloo) HF == Megatron greedy tokens at TP=2 and at PP=2."""
from __future__ import annotations

import json

import pytest
import torch

from megatron_slm.commands.generate import main as generate_main
from megatron_slm.generate.backends import HFSource
from megatron_slm.generate.decode import decode
from megatron_slm.generate.sampling import SamplingConfig, TokenPolicy
from megatron_slm.testing.tiny_slm import CORPUS, make_tiny_slm
from megatron_slm.vocab import SpeechVocab
from tests.conftest import REPO, run_torchrun

K = 100
UNITS = str(CORPUS / "units.jsonl")


@pytest.fixture(scope="module")
def slm(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    mc, hf = make_tiny_slm(root, num_units=K)
    return root, mc, hf


@pytest.fixture(scope="module")
def hf_source(slm):
    from transformers import AutoModelForCausalLM

    vocab = SpeechVocab.from_pretrained(slm[2], num_units=K)
    return HFSource(AutoModelForCausalLM.from_pretrained(slm[2], local_files_only=True), vocab), vocab


def _prompts(vocab, n=5):
    from megatron_slm.generate.prompts import encode_prompt, read_prompt_file

    ps = read_prompt_file(UNITS, seconds=2.0)
    return ps.prompts[:n], [encode_prompt(p, vocab, "speech") for p in ps.prompts[:n]]


@torch.no_grad()
def _reference_greedy(model, prompt, policy, steps):
    """No cache, no padding, one prompt: argmax of the masked logits, the full sequence each step."""
    seq, out = list(prompt), []
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
        tok = int(logits.masked_fill(~policy.allowed[:logits.shape[0]], float("-inf")).argmax())
        if tok in policy.stops:
            break
        out.append(tok)
        seq.append(tok)
    return out


def test_kv_cache_batch_equals_the_cache_free_reference(hf_source):
    src, vocab = hf_source
    prompts, ids = _prompts(vocab)
    assert len({len(i) for i in ids}) > 1  # left padding is exercised
    policy = TokenPolicy.for_output(vocab, src.rows, "speech")
    conts = decode(src, ids, [p.id for p in prompts], policy, SamplingConfig(greedy=True, max_new_tokens=24))
    for prompt_ids, c in zip(ids, conts):
        assert c.ids == _reference_greedy(src.model, prompt_ids, policy, 24)
        assert all(vocab.unit_offset <= t < vocab.speech_id for t in c.ids)
    assert sum(len(c.ids) for c in conts) > 40


def test_text_continuations_of_speech_prompts_hold_text_ids_only(hf_source):
    from megatron_slm.generate.prompts import encode_prompt

    src, vocab = hf_source
    prompts, _ = _prompts(vocab)
    ids = [encode_prompt(p, vocab, "text") for p in prompts]
    assert all(i[1] == vocab.speech_id and i[-1] == vocab.text_id for i in ids)
    policy = TokenPolicy.for_output(vocab, src.rows, "text")
    conts = decode(src, ids, [p.id for p in prompts], policy, SamplingConfig(temperature=1.5, top_k=0, max_new_tokens=30))
    toks = [t for c in conts for t in c.ids]
    assert len(toks) > 50 and all(vocab.modality_of([t])[0] == 0 for t in toks)
    for prompt_ids, c in zip(ids, conts):
        assert c.stop in ("length", "eos", "modality_switch")


def _rows(path):
    return {r["id"]: r for r in map(json.loads, open(path))}


def _gen(slm, out, *extra, backend="hf"):
    root, mc, hf = slm
    model = ["--hf-dir", str(hf)] if backend == "hf" else ["--mcore-dir", str(mc)]
    return generate_main([*model, "--prompt-units", UNITS, "--prompt-seconds", "2", "--limit", "6",
                          "--max-new-tokens", "20", "--out", str(out), "--force", *extra])


def test_cli_greedy_is_deterministic_and_seeded_sampling_reproducible(slm, tmp_path):
    assert _gen(slm, tmp_path / "g1.jsonl", "--greedy") == 0
    assert _gen(slm, tmp_path / "g2.jsonl", "--greedy", "--batch-size", "2") == 0
    g1, g2 = _rows(tmp_path / "g1.jsonl"), _rows(tmp_path / "g2.jsonl")
    assert {k: v["generated_ids"] for k, v in g1.items()} == {k: v["generated_ids"] for k, v in g2.items()}
    # sampling: same seed -> same tokens, whatever the batch size; another seed -> others
    assert _gen(slm, tmp_path / "s1.jsonl", "--seed", "3") == 0
    assert _gen(slm, tmp_path / "s2.jsonl", "--seed", "3", "--batch-size", "4") == 0
    assert _gen(slm, tmp_path / "s3.jsonl", "--seed", "4") == 0
    s1, s2, s3 = (_rows(tmp_path / f"s{i}.jsonl") for i in (1, 2, 3))
    assert {k: v["generated_ids"] for k, v in s1.items()} == {k: v["generated_ids"] for k, v in s2.items()}
    assert any(s1[k]["generated_ids"] != s3[k]["generated_ids"] for k in s1)
    row = s1["s01_01"]
    assert row["units"] == [t - 512 for t in row["generated_ids"]] and all(0 <= u < K for u in row["units"])
    assert row["settings"]["top_k"] == 25 and row["settings"]["temperature"] == 0.8
    assert row["model"]["backend"] == "hf" and row["model"]["vocab"]["num_units"] == K
    assert row["unit_identity"]["k"] == K and row["prompt"]["seconds"] == 2.0
    assert {r["stop"] for r in s1.values()} <= {"length", "eos", "modality_switch"}


def test_cli_resume_keeps_finished_rows(slm, tmp_path):
    out = tmp_path / "r.jsonl"
    assert _gen(slm, out, "--greedy") == 0
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # a run killed mid-line
    root, mc, hf = slm
    assert generate_main(["--hf-dir", str(hf), "--prompt-units", UNITS, "--prompt-seconds", "2", "--limit", "6",
                          "--max-new-tokens", "20", "--out", str(out), "--resume", "--greedy"]) == 0
    again = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(again) == 6 and len({r["id"] for r in again}) == 6
    assert _gen(slm, out, "--greedy", "--force") == 0
    assert generate_main(["--hf-dir", str(hf), "--prompt-units", UNITS, "--out", str(out)]) == 1


def test_cli_bad_input_gets_one_clear_message(slm, tmp_path, capsys):
    root, mc, hf = slm

    def run(*args):
        code = generate_main(["--hf-dir", str(hf), "--out", str(tmp_path / "x.jsonl"), "--force", *args])
        return code, capsys.readouterr().err

    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"id": "long", "segments": [{"units": [1, 2] * 600}]}) + "\n")
    code, err = run("--prompt-jsonl", str(long))
    assert code == 1 and "prompt 'long'" in err and "the model's context is 1024" in err and "Traceback" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "b", "segments": [{"units": [1, 2, 150]}]}) + "\n")
    code, err = run("--prompt-jsonl", str(bad))
    assert code == 1 and f"{bad}:1" in err and "unit 150, outside [0, 100)" in err
    code, err = run("--prompt-units", UNITS, "--prompt-seconds", "0.01", "--limit", "1")
    assert code == 1 and "is empty" in err and "--prompt-seconds" in err
    meta = json.loads((CORPUS / "units.jsonl.meta.json").read_text())
    meta["kmeans"]["sha256"] = "0" * 64
    (tmp_path / "other.meta.json").write_text(json.dumps(meta))
    code, err = run("--prompt-units", UNITS, "--units-meta", str(tmp_path / "other.meta.json"))
    assert code == 1 and "different extractor" in err and "sha256" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    code, err = run("--prompt-text", str(empty))
    assert code == 1 and "no usable prompts" in err
    code, err = generate_main(["--mcore-dir", str(mc), "--tp", "3", "--prompt-units", UNITS,
                               "--out", str(tmp_path / "y.jsonl")]), capsys.readouterr().err
    assert code == 1 and "num_attention_heads=4 does not divide by --tp 3" in err
    with pytest.raises(SystemExit) as e:
        generate_main(["--hf-dir", str(hf), "--prompt-units", UNITS, "--output-modality", "video", "--out", "z.jsonl"])
    assert e.value.code == 2 and "unknown modality" in capsys.readouterr().err


@pytest.mark.slow
def test_greedy_tokens_hf_equal_megatron_tp2_and_pp2(slm, tmp_path):
    root, mc, hf = slm
    common = ["--prompt-units", UNITS, "--prompt-seconds", "2", "--limit", "6", "--greedy", "--max-new-tokens", "24",
              "--batch-size", "4"]
    outs = {}
    for modality in ("speech", "text"):
        outs["hf", modality] = tmp_path / f"hf_{modality}.jsonl"
        assert generate_main(["--hf-dir", str(hf), *common, "--output-modality", modality,
                              "--out", str(outs["hf", modality])]) == 0
    # two launches keep the test short: TP=2 continues in speech, PP=2 in text (S->T)
    for tag, par, modality in (("tp2", ["--tp", "2"], "speech"), ("pp2", ["--pp", "2"], "text")):
        outs[tag, modality] = tmp_path / f"{tag}_{modality}.jsonl"
        run_torchrun(2, REPO / "tools" / "generate.py",
                     ["--mcore-dir", mc, *par, *common, "--output-modality", modality, "--out", outs[tag, modality]],
                     cwd=REPO, timeout=600)
    vocab = SpeechVocab.from_pretrained(hf, num_units=K)
    for modality in ("speech", "text"):
        ref = _rows(outs["hf", modality])
        assert len(ref) == 6 and sum(len(r["generated_ids"]) for r in ref.values()) > 30
        for tag in ("tp2", "pp2"):
            if (tag, modality) not in outs:
                continue
            got = _rows(outs[tag, modality])
            assert {k: v["generated_ids"] for k, v in got.items()} == {k: v["generated_ids"] for k, v in ref.items()}
            assert got["s01_01"]["model"]["backend"] == "megatron"
        want = 1 if modality == "speech" else 0
        assert all((vocab.modality_of(r["generated_ids"]) == want).all() for r in ref.values() if r["generated_ids"])


@pytest.mark.slow
def test_megatron_data_parallel_sampling_matches_hf(slm, tmp_path):
    """DP=2 (two replicas, batches split between them, rows gathered on rank 0): every prompt, with
    seeded sampling, gets the tokens the HF model draws for it (per-prompt generators)."""
    root, mc, hf = slm
    common = ["--prompt-text", str(CORPUS / "stories.txt"), "--limit", "7", "--output-modality", "speech",
              "--max-new-tokens", "16", "--batch-size", "2", "--seed", "5"]
    assert generate_main(["--hf-dir", str(hf), *common, "--out", str(tmp_path / "hf.jsonl")]) == 0
    run_torchrun(2, REPO / "tools" / "generate.py", ["--mcore-dir", mc, *common, "--out", tmp_path / "dp.jsonl"],
                 cwd=REPO, timeout=600)
    ref, got = _rows(tmp_path / "hf.jsonl"), _rows(tmp_path / "dp.jsonl")
    assert len(ref) == 7 and set(got) == set(ref)
    assert {k: v["generated_ids"] for k, v in got.items()} == {k: v["generated_ids"] for k, v in ref.items()}
    vocab = SpeechVocab.from_pretrained(hf, num_units=K)
    row = ref[next(iter(ref))]
    assert row["prompt"]["segments"][0]["text"] and row["prompt"]["num_tokens"] > 3
    assert all((vocab.modality_of(r["generated_ids"]) == 1).all() for r in ref.values() if r["generated_ids"])
