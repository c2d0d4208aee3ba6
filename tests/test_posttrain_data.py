"""Post-training data: the record format, SlamKit's preference features, truncation and skips,
named errors, the objective/data checks, SFT's loss mask and the DPO loss against TRL's."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_slm.config import ConfigError, load_config
from megatron_slm.data.preprocess import PreprocessError
from megatron_slm.posttrain import records
from megatron_slm.posttrain.datasets import PairData, check_objective
from megatron_slm.posttrain.preprocess import PairJob, run
from megatron_slm.posttrain.storage import PairStore
from megatron_slm.testing.synthetic_units import write_synthetic_corpus
from megatron_slm.units.records import make_meta, read_meta, write_meta
from megatron_slm.vocab import SpeechVocab

from conftest import REPO, TOKENIZER

K = 20


@pytest.fixture(scope="module")
def vocab():
    return SpeechVocab.from_pretrained(str(TOKENIZER), num_units=K)


@pytest.fixture(scope="module")
def units_file(tmp_path_factory):
    return write_synthetic_corpus(str(tmp_path_factory.mktemp("units")), n=2, k=K).units


def write_records(path: Path, recs: list, units_file=None) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    if units_file:
        write_meta(str(path), read_meta(units_file))
    return str(path)


def pairs(prefix, vocab):
    store = PairStore(prefix, vocab)
    return [store.parts(i) for i in range(len(store))]


def same_pairs(a, b):
    return len(a) == len(b) and all(np.array_equal(pa, pb) and all(np.array_equal(x, y) for x, y in zip(ca, cb))
                                    for (pa, ca), (pb, cb) in zip(a, b))


RNG = np.random.default_rng(0)
SPEECH_RECS = [{"prompt": RNG.integers(0, K, 6).tolist(), "chosen": RNG.integers(0, K, 4).tolist(),
                "rejected": RNG.integers(0, K, 5).tolist()} for _ in range(5)]


def test_layout_speech_only_and_mixed(vocab):
    parts = records.parse_record({"prompt": {"units": [1, 2]}, "chosen": {"units": [3]}, "rejected": {"units": [4, 4]}},
                                 "preference", "x:1")
    pair = records.layout(parts, "preference", vocab, "x:1")
    u = vocab.unit_offset
    assert pair.prompt.tolist() == [vocab.bos, u + 1, u + 2]  # BOS + prompt, no modality token
    assert [c.tolist() for c in pair.completions] == [[u + 3, vocab.eod], [u + 4, u + 4, vocab.eod]]
    mixed = records.parse_record({"prompt": "once upon", "chosen": " a time", "rejected": [{"units": [5]}]},
                                 "preference", "x:2")
    pair = records.layout(mixed, "preference", vocab, "x:2")
    assert pair.prompt[:2].tolist() == [vocab.bos, vocab.text_id]
    assert pair.completions[0][-1] == vocab.eod and vocab.text_id not in pair.completions[0]
    assert pair.completions[1].tolist() == [vocab.speech_id, u + 5, vocab.eod]  # the switch opens the completion


def test_truncation_is_trl_style():
    pair = records.PairIds(np.arange(10), [np.arange(100, 108), np.arange(200, 203)])
    cut, done = records.truncate(pair, max_length=12, max_prompt_length=4, keep_bos=True, where="")
    assert cut.prompt.tolist() == [0, 7, 8, 9]  # BOS kept, the rest from the left
    assert cut.completions[0].tolist() == list(range(100, 108)) and done.prompt and not done.completions
    cut, done = records.truncate(pair, max_length=8, max_prompt_length=4, keep_bos=True, where="")
    assert cut.completions[0].tolist() == [100, 101, 102, 103] and cut.completions[1].tolist() == [200, 201, 202]
    assert done.completions


def test_preprocess_counts_skips_and_truncation(tmp_path, vocab, units_file):
    recs = SPEECH_RECS + [
        {"prompt": [1], "chosen": [], "rejected": [2]},                    # empty completion
        {"prompt": [1], "chosen": [3, 4], "rejected": [3, 4]},             # chosen == rejected
        {"prompt": list(range(K)) * 3, "chosen": [1] * 40, "rejected": [2]},  # over-long: truncated, kept
        {"prompt": [1], "chosen": [3]},                                     # no rejected
    ]
    recs = [{k: {"units": v} for k, v in r.items()} for r in recs]
    src = write_records(tmp_path / "p.jsonl", recs, units_file)
    meta = run(PairJob("preference", str(TOKENIZER), [src], str(tmp_path / "out"), max_length=32, progress=False))
    assert meta["documents"] == 6
    assert meta["skipped"]["counts"] == {"empty_completion": 1, "same_completions": 1, "missing_field": 1}
    assert meta["truncated"] == {"prompts": 1, "completions": 1, "pairs": 1}
    longest = max(len(p) + max(len(c) for c in cs) for p, cs in pairs(str(tmp_path / "out"), vocab))
    assert longest <= 32
    with pytest.raises(PreprocessError, match=r"p.jsonl:9: field 'rejected' missing \[--strict\]"):
        run(PairJob("preference", str(TOKENIZER), [src], str(tmp_path / "strict"), max_length=32, strict=True, progress=False))


def test_slamkit_features_preprocess_to_the_same_pairs(tmp_path, vocab, units_file):
    """SlamKit's feature extractor writes prompt/chosen/rejected as {"units", "duration"} beside
    the wav paths; its DPO rows are BOS + prompt units, each completion + EOS: our pairs."""
    ours = [{"id": i, **{k: {"units": v} for k, v in r.items()}} for i, r in enumerate(SPEECH_RECS)]
    theirs = [{"prompt_path": f"w/{i}_p.wav", "chosen_path": f"w/{i}_c.wav", "rejected_path": f"w/{i}_r.wav",
               **{k: {"units": v, "duration": [2] * len(v)} for k, v in r.items()}} for i, r in enumerate(SPEECH_RECS)]
    a = write_records(tmp_path / "ours.jsonl", ours, units_file)
    b = write_records(tmp_path / "sk.jsonl", theirs)
    run(PairJob("preference", str(TOKENIZER), [a], str(tmp_path / "a"), progress=False))
    run(PairJob("preference", str(TOKENIZER), [b], str(tmp_path / "b"), units_meta=units_file, progress=False))
    got_a, got_b = pairs(str(tmp_path / "a"), vocab), pairs(str(tmp_path / "b"), vocab)
    assert len(got_a) == len(SPEECH_RECS) and same_pairs(got_a, got_b)
    u = vocab.unit_offset
    r0 = SPEECH_RECS[0]
    assert got_b[0][0].tolist() == [vocab.bos] + [u + x for x in r0["prompt"]]
    assert got_b[0][1][1].tolist() == [u + x for x in r0["rejected"]] + [vocab.eod]


REPEATS = "the dog ran the dog sat the dog is very happy"  # 10 word bigrams, "the dog" 3 times: Auto-BLEU 0.3 exactly


def slamkit_pref(i, prompt_text, chosen_text):
    """A line of SlamKit's preference JSONL: wav paths, units + durations and the transcripts."""
    r = SPEECH_RECS[i]
    return {"prompt_path": f"w/{i}_p.wav", "chosen_path": f"w/{i}_c.wav", "rejected_path": f"w/{i}_r.wav",
            **{k: {"units": v, "duration": [2] * len(v)} for k, v in r.items()},
            "prompt_text": prompt_text, "chosen_text": chosen_text, "rejected_text": "a rejected ending"}


def test_repetition_filter_drops_repetitive_slamkit_pairs(tmp_path, units_file, capsys):
    """SlamKit's repetition filter (repetition_filter: true, max_auto_bleu 0.3, auto_bleu_n 2): a
    pair is kept iff auto_bleu(prompt_text + " " + chosen_text) < 0.3; dropped pairs are counted."""
    from megatron_slm.commands.preprocess_data import main as preprocess
    from megatron_slm.eval.generative import auto_bleu

    recs = [slamkit_pref(0, "Once upon a time a fox lived in the wood.", "It found a red apple."),
            slamkit_pref(1, "The girl sang.", "She sang and sang and sang and sang and sang."),  # repetitive
            slamkit_pref(2, "the dog ran the dog", "sat the dog is very happy"),  # exactly 0.3: dropped (strict <)
            slamkit_pref(3, "A cat slept.", "Then it woke up.")]
    assert auto_bleu(REPEATS, 2) == 0.3
    src = write_records(tmp_path / "sk.jsonl", recs)
    plain = run(PairJob("preference", str(TOKENIZER), [src], str(tmp_path / "all"), units_meta=units_file,
                        progress=False))
    assert plain["documents"] == 4 and plain["skipped"]["counts"] == {} and plain["repetition_filter"] is None
    meta = run(PairJob("preference", str(TOKENIZER), [src], str(tmp_path / "f"), units_meta=units_file,
                       max_auto_bleu=0.3, progress=False))
    assert meta["documents"] == 2 and meta["skipped"]["counts"] == {"repetitive": 2}
    assert any("sk.jsonl:2: auto-BLEU" in e for e in meta["skipped"]["examples"])
    rep = meta["repetition_filter"]
    assert (rep["max_auto_bleu"], rep["auto_bleu_n"], rep["measured"], rep["dropped"]) == (0.3, 2, 4, 2)
    assert rep["word_tokenizer"] in ("nltk", "regex")
    loose = run(PairJob("preference", str(TOKENIZER), [src], str(tmp_path / "l"), units_meta=units_file,
                        max_auto_bleu=0.31, progress=False))
    assert loose["documents"] == 3  # 0.3 < 0.31: the boundary record is back
    # the filtered pairs are the unfiltered ones less the dropped records
    vocab = SpeechVocab.from_pretrained(str(TOKENIZER), num_units=K)
    got, every = pairs(str(tmp_path / "f"), vocab), pairs(str(tmp_path / "all"), vocab)
    assert same_pairs(got, [every[0], every[3]])
    # the CLI: --max-auto-bleu / --auto-bleu-n, the count in its summary; --strict does not stop at a filtered pair
    assert preprocess(["preference", "--tokenizer", str(TOKENIZER), "--input", src, "--out-prefix",
                       str(tmp_path / "cli"), "--units-meta", units_file, "--max-auto-bleu", "0.3",
                       "--auto-bleu-n", "2", "--strict", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 pairs" in out and "repetitive" in out and "2 of 4 measured dropped" in out
    assert json.loads((tmp_path / "cli.meta.json").read_text())["skipped"]["counts"] == {"repetitive": 2}


def test_repetition_filter_on_records_without_slamkit_fields(tmp_path, units_file):
    """Our records: the text segments of prompt and chosen; a record without text is skipped
    (no_text), and inputs where no record has text are refused."""
    text = [{"prompt": "the dog ran the dog", "chosen": [{"units": [1, 2]}, {"text": "sat the dog is very happy"}],
             "rejected": " a bird."},
            {"prompt": [{"text": "Once upon a time"}, {"units": [3]}], "chosen": " a fox ran.", "rejected": " x"}]
    speech = [{k: {"units": v} for k, v in r.items()} for r in SPEECH_RECS[:2]]
    src = write_records(tmp_path / "mixed.jsonl", text + speech, units_file)
    meta = run(PairJob("preference", str(TOKENIZER), [src], str(tmp_path / "m"), max_auto_bleu=0.3, progress=False))
    assert meta["documents"] == 1 and meta["skipped"]["counts"] == {"repetitive": 1, "no_text": 2}
    with pytest.raises(PreprocessError, match=r"mixed.jsonl:3: --max-auto-bleu: the record has no text.*--strict"):
        run(PairJob("preference", str(TOKENIZER), [src], str(tmp_path / "s"), max_auto_bleu=0.3, strict=True,
                    progress=False))
    only_speech = write_records(tmp_path / "speech.jsonl", speech, units_file)
    with pytest.raises(PreprocessError, match="none of the 2 records has any: no prompt_text/chosen_text"):
        run(PairJob("preference", str(TOKENIZER), [only_speech], str(tmp_path / "n"), max_auto_bleu=0.3,
                    progress=False))
    half = write_records(tmp_path / "half.jsonl", [{**speech[0], "prompt_text": "only the prompt"}, speech[1]], units_file)
    with pytest.raises(PreprocessError, match="half.jsonl:1: the repetition filter reads prompt_text and chosen_text"):
        run(PairJob("preference", str(TOKENIZER), [half], str(tmp_path / "h"), max_auto_bleu=0.3, strict=True,
                    progress=False))
    with pytest.raises(PreprocessError, match="not sft"):
        run(PairJob("sft", str(TOKENIZER), [src], str(tmp_path / "sft"), max_auto_bleu=0.3, progress=False))


def test_units_identity_is_required_and_checked(tmp_path, units_file):
    recs = [{k: {"units": v} for k, v in r.items()} for r in SPEECH_RECS]
    bare = write_records(tmp_path / "bare.jsonl", recs)
    with pytest.raises(PreprocessError, match="no units identity"):
        run(PairJob("preference", str(TOKENIZER), [bare], str(tmp_path / "x"), progress=False))
    made = write_records(tmp_path / "a.jsonl", recs, units_file)
    run(PairJob("preference", str(TOKENIZER), [made], str(tmp_path / "a"), progress=False))
    other = write_records(tmp_path / "b.jsonl", recs)
    meta = read_meta(units_file)
    write_meta(other, make_meta(meta["extractor"], K, "f" * 64, None, True))  # another k-means, same K
    with pytest.raises(PreprocessError, match="hold units from a different extractor.*the records' units come from"):
        run(PairJob("preference", str(TOKENIZER), [other], str(tmp_path / "b"), match=[str(tmp_path / "a")], progress=False))


def test_objective_and_data_kinds_must_agree():
    blend = ["data.source=blend", "data.blend=[{path: x}]"]
    with pytest.raises(ConfigError, match=r"data.blend\[0\] holds preference data.*train.objective=dpo"):
        check_objective(load_config(None, blend), ["preference"])
    with pytest.raises(ConfigError, match=r"holds interleaved data but train.objective=dpo"):
        check_objective(load_config(None, blend + ["train.objective=dpo"]), ["interleaved"])
    with pytest.raises(ConfigError, match="train.objective=sft needs data.source=blend"):
        check_objective(load_config(None, ["train.objective=sft"]), [])
    check_objective(load_config(None, blend + ["train.objective=sft"]), ["sft"])


def test_sft_loss_ignores_prompt_targets(tmp_path, vocab, units_file):
    """Changing a prompt token's target never changes the SFT loss; changing a response's does."""
    from megatron_slm.training.loss import loss_func

    recs = [{"prompt": {"units": r["prompt"]}, "response": {"units": r["chosen"]}} for r in SPEECH_RECS]
    src = write_records(tmp_path / "sft.jsonl", recs, units_file)
    run(PairJob("sft", str(TOKENIZER), [src], str(tmp_path / "sft"), progress=False))
    cfg = load_config(None, ["train.objective=sft", "train.seq_length=16", "data.split=1,0,0", "data.source=blend",
                             f"data.blend=[{{path: {tmp_path / 'sft'}, kind: sft}}]"])
    ds = PairData.open(cfg, vocab, [str(tmp_path / "sft")]).split_dataset("train", 4)
    sample = ds[0]
    prompt_len = len(PairStore(str(tmp_path / "sft"), vocab).parts(ds.record(0))[0])
    mask = sample["loss_mask"].astype(bool)
    assert not mask[:prompt_len - 1].any() and mask[prompt_len - 1:prompt_len + 4].all()  # response + EOS targets
    logits = torch.randn(1, 16, vocab.vocab_size, generator=torch.Generator().manual_seed(0))

    def loss(labels):
        per_token = torch.nn.functional.cross_entropy(logits[0], torch.from_numpy(labels), reduction="none")[None]
        total, count, _ = loss_func(torch.from_numpy(sample["loss_mask"])[None],
                                    torch.from_numpy(sample["modality"])[None], per_token)
        return (total / count).item()

    base = loss(sample["labels"])
    for pos, changes in ((0, False), (prompt_len - 2, False), (prompt_len - 1, True)):
        labels = sample["labels"].copy()
        labels[pos] = (labels[pos] + 7) % vocab.vocab_size
        assert (loss(labels) != base) == changes, pos


def test_dpo_loss_equals_trls_formula():
    """Our per-pair loss and rewards against TRL 1.16's sigmoid DPO written out on the same logps
    (the full-model comparison through DPOTrainer is tests/test_posttrain_dpo.py)."""
    import torch.nn.functional as F

    from megatron_slm.posttrain.objective import dpo_losses

    g = torch.Generator().manual_seed(1)
    c, r, rc, rr = (-torch.rand(8, generator=g, dtype=torch.float64) * 40 for _ in range(4))
    losses, rew_c, rew_r = dpo_losses(c, r, rc, rr, beta=0.1)
    delta = (c - rc) - (r - rr)
    assert torch.allclose(losses, -F.logsigmoid(0.1 * delta), atol=1e-12)
    assert torch.allclose(rew_c, 0.1 * (c - rc)) and torch.allclose(rew_r, 0.1 * (r - rr))
    smoothed, _, _ = dpo_losses(c, r, rc, rr, beta=0.1, label_smoothing=0.2)  # conservative DPO
    assert torch.allclose(smoothed, -0.8 * F.logsigmoid(0.1 * delta) - 0.2 * F.logsigmoid(-0.1 * delta), atol=1e-12)


@pytest.mark.parametrize("recipe", sorted((REPO / "examples" / "configs").glob("dpo_*.yaml")) +
                         sorted((REPO / "examples" / "configs").glob("sft_*.yaml")), ids=lambda p: p.stem)
def test_recipes_load_with_their_objective(recipe):
    cfg = load_config(recipe)
    assert cfg.train.objective == recipe.stem.split("_")[0] and cfg.data.blend[0].kind == \
        {"dpo": "preference", "sft": "sft"}[cfg.train.objective]
    assert recipe.read_text().startswith("# ") and "SlamKit" in recipe.read_text().split("\nmodel:")[0]
    if cfg.train.objective == "dpo":  # SlamKit's DPO settings (the tiny CPU recipe keeps its beta only)
        assert cfg.dpo.beta == 0.1
        if cfg.runtime.device == "cuda":
            assert (cfg.optimizer.lr, cfg.optimizer.clip_grad) == (5e-5, 0.5)


def _story_corpus(tmp_path: Path) -> tuple[Path, Path]:
    """A story corpus of 4 train, 1 valid and 2 test two-sentence stories, and its units (K ids)."""
    from megatron_slm.units.records import make_record

    corpus = tmp_path / "stories"
    corpus.mkdir()
    stories, align, units = [], {"train": [], "valid": [], "test": []}, []
    for i, split in enumerate(["train"] * 4 + ["valid", "test", "test"]):
        sentences = [f"Hero{i} went out.", f"Hero{i} came back home{i}."]
        words = [{"word": w, "start": 0.5 * k, "end": 0.5 * k + 0.4} for k, w in enumerate(" ".join(sentences).split())]
        stories.append({"id": f"s{i}", "split": split, "sentences": sentences})
        align[split].append({"id": f"s{i}", "words": words})
        units.append(make_record(f"s{i}", f"a/{i}.flac", (np.arange(60) + i) % K, 0.04, 2.4))  # one run per 40 ms
    (corpus / "stories.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stories))
    for split, recs in align.items():
        (corpus / f"alignments.{split}.jsonl").write_text("".join(json.dumps(a) + "\n" for a in recs))
    units_path = tmp_path / "units.jsonl"
    units_path.write_text("".join(u.to_json() + "\n" for u in units))
    write_meta(str(units_path), make_meta({"name": "synthetic", "frame_rate": 25.0, "version": 1}, K, "0" * 64, None, True))
    return corpus, units_path


def test_story_pairs_use_train_stories_only(tmp_path, vocab):
    """tools/make_preference_data.py: prompt = all but the last sentence, chosen = the true ending,
    rejected = another train story's ending; speech cut by SlamKit's rule; never valid/test stories."""
    from megatron_slm.commands.make_preference_data import main as make_pairs

    corpus, units_path = _story_corpus(tmp_path)
    out = tmp_path / "pref.jsonl"
    assert make_pairs(["--stories", str(corpus), "--units", str(units_path), "--out", str(out)]) == 0
    pairs = [json.loads(l) for l in out.read_text().splitlines()]
    assert [p["id"] for p in pairs] == ["s0", "s1", "s2", "s3"]
    assert all(p["negative_from"] in {"s0", "s1", "s2", "s3"} - {p["id"]} for p in pairs)
    # the last sentence starts at word 3 = 1.5 s: runs ending at >= 1.5 s (the 38th on) are the ending
    assert len(pairs[0]["prompt"]["units"]) == 37 and len(pairs[0]["chosen"]["units"]) == 23
    # SlamKit's transcript fields, which the repetition filter reads
    assert (pairs[0]["prompt_text"], pairs[0]["chosen_text"]) == ("Hero0 went out.", "Hero0 came back home0.")
    assert all(p["rejected_text"] == f"Hero{p['negative_from'][1:]} came back home{p['negative_from'][1:]}."
               for p in pairs)
    text = tmp_path / "text.jsonl"
    assert make_pairs(["--stories", str(corpus), "--out", str(text), "--prompt", "text", "--completion", "text"]) == 0
    first = json.loads(text.read_text().splitlines()[0])
    assert (first["prompt"], first["chosen"]) == ("Hero0 went out.", " Hero0 came back home0.")
    meta = run(PairJob("preference", str(TOKENIZER), [str(out)], str(tmp_path / "ds"), progress=False))
    assert meta["documents"] == 4 and meta["identity"]["units"]["k"] == K
    meta = run(PairJob("preference", str(TOKENIZER), [str(out)], str(tmp_path / "dsf"), max_auto_bleu=0.3,
                       progress=False))
    assert meta["documents"] == 4 and meta["repetition_filter"]["measured"] == 4  # our speech pairs, filtered as SlamKit's
    held_out = ["--stories", str(corpus), "--units", str(units_path), "--split", "test", "--out", str(tmp_path / "e.jsonl")]
    assert make_pairs(held_out) == 1  # held-out stories never become training pairs
    prompts = tmp_path / "gen" / "autobleu_units.jsonl"  # ... only eval items (tools/eval_slm.py --items), and prompts
    assert make_pairs(held_out + ["--eval-items", "--prompts-out", str(prompts)]) == 0
    header, *items = [json.loads(l) for l in (tmp_path / "e.jsonl").read_text().splitlines()]
    from megatron_slm.generate.prompts import read_prompt_file

    ps = read_prompt_file(str(prompts), None, None)  # tools/generate.py --prompt-jsonl, eval_slm's generative tasks
    assert [p.id for p in ps.prompts] == ["s5", "s6"] and ps.unit_identity["k"] == K
    assert [json.loads(l)["segments"] for l in prompts.read_text().splitlines()] == [[{"units": i["prompt"]["units"]}]
                                                                                   for i in items]
    assert header["task"] == "pref" and header["unit_identity"]["k"] == K
    assert [(i["id"], i["meta"]["negative_from"]) for i in items] == [("s5", "s6"), ("s6", "s5")]
    assert items[0]["prompt"]["units"] and items[0]["negatives"][0]["units"]


@pytest.mark.slow  # converts a tiny model
@pytest.mark.parametrize("prompt, completion", [("speech", "speech"), ("text", "text"), ("speech", "text"),
                                                ("text", "speech")])
def test_sampled_negatives_in_the_completions_modality(tmp_path, prompt, completion):
    """--negatives sampled: the rejected is the model's continuation of the prompt in the chosen's
    modality and at most its length; a text sample is its own transcript; the pairs preprocess."""
    from megatron_slm.commands.make_preference_data import main as make_pairs
    from megatron_slm.testing.tiny_slm import make_tiny_slm

    corpus, units_path = _story_corpus(tmp_path)
    _, hf = make_tiny_slm(tmp_path / "slm", num_units=K, tp=1, pp=1, num_hidden_layers=2)
    out = tmp_path / "pref.jsonl"
    assert make_pairs(["--stories", str(corpus), "--units", str(units_path), "--out", str(out), "--prompt", prompt,
                       "--completion", completion, "--negatives", "sampled", "--hf-dir", str(hf)]) == 0
    pairs = [json.loads(l) for l in out.read_text().splitlines()]
    sampled = [p for p in pairs if p["negative_from"] == "sampled"]
    assert len(sampled) >= 3, [p["negative_from"] for p in pairs]
    for p in sampled:
        if completion == "speech":
            assert 0 < len(p["rejected"]["units"]) <= len(p["chosen"]["units"]) and "rejected_text" not in p
            assert all(0 <= u < K for u in p["rejected"]["units"]) and p["rejected"] != p["chosen"]
        else:
            # (a random model's byte pieces decode to text that re-tokenises longer: no length check here)
            assert isinstance(p["rejected"], str) and p["rejected_text"] == p["rejected"].strip() != ""
            assert p["rejected"].strip() != p["chosen"].strip()
    meta = run(PairJob("preference", str(TOKENIZER), [str(out)], str(tmp_path / "ds"), progress=False,
                       units_meta=str(units_path)))
    assert meta["documents"] == len(pairs)


def test_a_sample_becomes_the_rejected_cut_to_the_chosens_length(vocab):
    from megatron_slm.posttrain.story_pairs import _take_sample

    ids = vocab.encode_text(" the cat sat on the mat")
    pair = {"chosen": " a dog ran.", "rejected": " other.", "rejected_text": "other."}
    assert _take_sample(pair, [*ids, vocab.eod], 3, "text", vocab)
    assert pair["rejected"] == vocab.decode(ids[:3]) and pair["rejected_text"] == vocab.decode(ids[:3]).strip()
    assert pair["negative_from"] == "sampled"
    same = {"chosen": " the cat", "rejected": " other."}
    assert not _take_sample(same, vocab.encode_text(" the cat"), 9, "text", vocab) and same["rejected"] == " other."
    speech = {"chosen": {"units": [1, 2, 3]}, "rejected": {"units": [4]}, "rejected_text": "x"}
    units = vocab.unit_ids([5, 6, 7, 8]).tolist()
    assert _take_sample(speech, [*units, vocab.eod], 3, "speech", vocab)
    assert speech["rejected"] == {"units": [5, 6, 7]} and "rejected_text" not in speech
