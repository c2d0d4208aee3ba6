"""Preprocessing to indexed datasets: content, determinism across workers, bad input, identity
checks, resume after a kill, and the CLI; units records validated, never coerced, on every path;
duplicate ids compared as JSON decodes them; a run that keeps nothing leaves the old dataset."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from megatron_slm.config import InterleaveConfig
from megatron_slm.data import interleave as il
from megatron_slm.document import Markers
from megatron_slm.data import preprocess as pp
from megatron_slm.corpus.alignments import AlignmentIndex
from megatron_slm.data.prepare import prepare_interleaved
from megatron_slm.data.storage import content_hash
from megatron_slm.testing.synthetic_units import write_synthetic_corpus
from megatron_slm.vocab import SpeechVocab

from conftest import CORPUS, REPO, TOKENIZER


@pytest.fixture(scope="module")
def vocab():
    return SpeechVocab.from_pretrained(str(TOKENIZER), num_units=20)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_synthetic_corpus(str(tmp_path_factory.mktemp("corpus")), n=60, k=20, seed=3)


def _job(corpus, out, **kw):
    args = dict(kind="interleaved", tokenizer=str(TOKENIZER), out_prefix=str(out), inputs=[corpus.units],
                alignments=corpus.alignments, shard_lines=16, progress=False)
    args.update(kw)
    return pp.PreprocessJob(**args)


def _docs(prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(prefix))
    return [ds[i].astype(np.int64) for i in range(len(ds))]


def test_static_documents_are_the_pure_interleaving(corpus, vocab, tmp_path):
    meta = pp.run(_job(corpus, tmp_path / "inter", seed=5))
    docs = _docs(tmp_path / "inter")
    assert meta["documents"] == len(docs) == 60 and not meta["skipped"]["counts"]
    align = AlignmentIndex(corpus.alignments)
    mk = Markers(vocab.speech_id, vocab.text_id, vocab.bos, vocab.eod)
    lines = Path(corpus.units).read_text().splitlines()
    for line, doc in zip(lines, docs):
        u, _ = prepare_interleaved(json.loads(line), "x", vocab, align, "slamkit")  # the default convention
        assert np.array_equal(doc, il.assemble(u, il.draw(u, InterleaveConfig(), 5, 0), mk, keep_empty=True))
    assert meta["identity"]["vocab"] == vocab.identity()
    assert meta["identity"]["units"]["k"] == 20
    tok = meta["tokens"]
    assert tok["total"] == sum(len(d) for d in docs) == meta["stored_tokens"]
    assert tok["speech"] == sum(int(((d >= vocab.unit_offset) & (d < vocab.speech_id)).sum()) for d in docs)
    seconds = sum(json.loads(line)["audio_seconds"] for line in lines)
    assert meta["audio_hours"] == pytest.approx(seconds / 3600) and meta["words"] > 60 * 8
    assert not (tmp_path / "inter.tmp").exists()


def test_output_independent_of_workers_and_dynamic_layout(corpus, vocab, tmp_path):
    pp.run(_job(corpus, tmp_path / "w1", workers=1))
    pp.run(_job(corpus, tmp_path / "w2", workers=2))
    assert content_hash(str(tmp_path / "w1")) == content_hash(str(tmp_path / "w2"))
    # dynamic storage: the epoch-0 draw from the stored layout equals the static document
    meta = pp.run(_job(corpus, tmp_path / "dyn", mode="dynamic"))
    assert meta["mode"] == "dynamic" and (tmp_path / "dyn_words.idx").exists()
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    layout, words = IndexedDataset(str(tmp_path / "dyn")), IndexedDataset(str(tmp_path / "dyn_words"))
    mk = Markers(vocab.speech_id, vocab.text_id, vocab.bos, vocab.eod)
    for i, static in enumerate(_docs(tmp_path / "w1")):
        w = words[i].astype(np.int64)
        n = int(w[1])
        offsets = np.concatenate(([0], np.cumsum(w[2:2 + n])))
        lay = layout[i].astype(np.int64)
        u = il.PreparedUtterance(int(w[0]), lay[:offsets[-1]], offsets, lay[offsets[-1]:], w[2 + n:2 + 2 * n], w[2 + 2 * n:])
        assert np.array_equal(il.assemble(u, il.draw(u, InterleaveConfig(), 1234, 0), mk, keep_empty=True), static)


def _textgrid(words):
    head = f'File type = "ooTextFile"\nObject class = "TextGrid"\nxmin = 0\nxmax = {words[-1]["end"]}\ntiers? <exists>\nsize = 1\nitem []:\n'
    tier = (f'    item [1]:\n        class = "IntervalTier"\n        name = "words"\n        xmin = 0\n'
            f'        xmax = {words[-1]["end"]}\n        intervals: size = {len(words)}\n')
    body = "".join(f'        intervals [{i + 1}]:\n            xmin = {w["start"]}\n            xmax = {w["end"]}\n'
                   f'            text = "{w["word"]}"\n' for i, w in enumerate(words))
    return head + tier + body


def test_textgrid_alignments_give_the_same_documents(corpus, tmp_path):
    grids = tmp_path / "mfa"
    grids.mkdir()
    keep = [json.loads(line) for line in Path(corpus.alignments).read_text().splitlines()[:5]]
    for al in keep:
        (grids / f"{al['id']}.TextGrid").write_text(_textgrid(al["words"]))
    meta = pp.run(_job(corpus, tmp_path / "tg", alignments=str(grids)))
    assert meta["documents"] == 5 and meta["skipped"]["counts"] == {"no_alignment": 55}
    pp.run(_job(corpus, tmp_path / "canon"))
    assert all(np.array_equal(a, b) for a, b in zip(_docs(tmp_path / "tg"), _docs(tmp_path / "canon")[:5]))


def test_speech_and_text_kinds(corpus, vocab, tmp_path):
    meta = pp.run(_job(corpus, tmp_path / "speech", kind="speech", alignments=None))
    first = json.loads(Path(corpus.units).read_text().splitlines()[0])
    doc = _docs(tmp_path / "speech")[0]
    assert doc.tolist() == [vocab.bos] + (np.array(first["units"]) + vocab.unit_offset).tolist() + [vocab.eod]
    assert meta["tokens"]["text"] == 0 and meta["kind"] == "speech"
    text = tmp_path / "t.jsonl"
    text.write_text(json.dumps({"body": "Once upon a time."}) + "\n" + json.dumps({"body": ""}) + "\n"
                    + json.dumps({"other": 1}) + "\n")
    meta = pp.run(pp.PreprocessJob(kind="text", tokenizer=str(TOKENIZER), out_prefix=str(tmp_path / "text"),
                                   inputs=[str(text)], text_key="body", progress=False))
    assert _docs(tmp_path / "text")[0].tolist() == [vocab.bos] + vocab.encode_text("Once upon a time.") + [vocab.eod]
    assert meta["skipped"]["counts"] == {"empty_transcript": 1, "missing_text_key": 1}
    assert meta["identity"]["units"] is None


def _messy_corpus(tmp_path, corpus):
    units = Path(corpus.units).read_bytes().splitlines(keepends=True)[:10]
    aligns = Path(corpus.alignments).read_text().splitlines(keepends=True)[:10]
    bad_unit = json.loads(units[1])
    bad_unit["units"][3] = 20  # K = 20
    empty = json.loads(aligns[2])
    empty["words"] = []
    bad_time = json.loads(aligns[4])
    bad_time["words"][1]["start"] = bad_time["words"][1]["end"] + 1
    u = tmp_path / "messy_units.jsonl"
    u.write_bytes(units[0] + (json.dumps(bad_unit) + "\n").encode() + units[2] + b"{truncated\n" + b'{"id": "\xff\xfe"}\n'
                  + units[3] + units[4] + units[0] + units[5])  # units[0] twice: duplicate id
    (tmp_path / "messy_units.jsonl.meta.json").write_text(Path(corpus.units + ".meta.json").read_text())
    a = tmp_path / "messy_al.jsonl"
    # units[5] has no alignment; aligns[6] has no units
    a.write_text("".join([aligns[0], aligns[1], json.dumps(empty) + "\n", aligns[3], json.dumps(bad_time) + "\n", aligns[6]]))
    return str(u), str(a)


def test_bad_records_are_skipped_counted_or_rejected_when_strict(corpus, tmp_path):
    units, aligns = _messy_corpus(tmp_path, corpus)
    job = pp.PreprocessJob(kind="interleaved", tokenizer=str(TOKENIZER), out_prefix=str(tmp_path / "m"), inputs=[units],
                           alignments=aligns, progress=False)
    meta = pp.run(job)
    assert meta["documents"] == 2  # units[0] and units[3]
    assert meta["skipped"]["counts"] == {"duplicate_id": 1, "empty_transcript": 1, "invalid_alignment": 1,
                                         "invalid_units": 1, "malformed_json": 1, "no_alignment": 1,
                                         "no_units": 1, "non_utf8": 1}
    examples = "\n".join(meta["skipped"]["examples"])
    assert f"{units}:2: field 'units'[3] = 20 outside [0, 20)" in examples
    assert f"{units}:4: not JSON" in examples
    job.strict = True
    job.out_prefix = str(tmp_path / "strict")
    with pytest.raises(pp.PreprocessError, match=r"messy_units.jsonl:2: field 'units'\[3\] = 20 outside .*--strict"):
        pp.run(job)
    assert not (tmp_path / "strict.idx").exists()


def test_identity_mismatches_are_refused(corpus, vocab, tmp_path):
    with pytest.raises(pp.PreprocessError, match=r"--num-units 30 but .*k=20"):
        pp.run(_job(corpus, tmp_path / "a", num_units=30))
    ext = tmp_path / "ext_tok"
    SpeechVocab.from_pretrained(str(TOKENIZER), num_units=50).save(ext)
    with pytest.raises(pp.PreprocessError, match="has 50 speech units.*num_units=20"):
        pp.run(_job(corpus, tmp_path / "a", tokenizer=str(ext)))
    pp.run(_job(corpus, tmp_path / "ok", kind="speech", alignments=None))
    other = write_synthetic_corpus(str(tmp_path / "c2"), n=4, k=20, seed=1,
                                   meta={**json.loads(Path(corpus.units + ".meta.json").read_text()),
                                         "kmeans": {"k": 20, "sha256": "1" * 64, "path": None}})
    with pytest.raises(pp.PreprocessError, match="hold units from a different extractor/k-means .*sha256"):
        pp.run(pp.PreprocessJob(kind="speech", tokenizer=str(TOKENIZER), out_prefix=str(tmp_path / "b"), inputs=[other.units],
                                match=[str(tmp_path / "ok")], progress=False))
    # re-writing an existing dataset with other units is refused too
    with pytest.raises(pp.PreprocessError, match="ok.meta.json and .*ok .being made. hold units from a different extractor"):
        pp.run(pp.PreprocessJob(kind="speech", tokenizer=str(TOKENIZER), out_prefix=str(tmp_path / "ok"), inputs=[other.units],
                                progress=False))
    with pytest.raises(pp.PreprocessError, match="not an extended vocabulary"):
        pp.run(_job(corpus, tmp_path / "c", kind="speech", alignments=None, match=[str(TOKENIZER)]))
    pp.run(_job(corpus, tmp_path / "d", kind="speech", alignments=None, match=[str(tmp_path / "ok.meta.json")]))


def test_killed_run_leaves_no_idx_and_resumes(corpus, tmp_path, monkeypatch):
    out = tmp_path / "r"
    real = pp.process_shard
    calls = []

    def dying(args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job is killed while working on its third shard
        calls.append(args[0])
        return real(args)

    monkeypatch.setattr(pp, "process_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        pp.run(_job(corpus, out))
    assert not Path(str(out) + ".idx").exists() and not Path(str(out) + ".bin").exists()
    assert sorted(p.name for p in Path(str(out) + ".tmp").glob("shard_*.json")) == ["shard_000000.json", "shard_000001.json"]
    calls.clear()
    monkeypatch.setattr(pp, "process_shard", lambda args: (calls.append(args[0]), real(args))[1])
    pp.run(_job(corpus, out))
    assert calls == [2, 3]  # 60 lines / 16 per shard: the two finished shards were kept
    pp.run(_job(corpus, tmp_path / "clean"))
    assert content_hash(str(out)) == content_hash(str(tmp_path / "clean"))
    # changed arguments never reuse stale shards
    Path(str(out) + ".tmp").mkdir()
    (Path(str(out) + ".tmp") / "run.json").write_text("{}")
    (Path(str(out) + ".tmp") / "shard_000000.json").write_text("{}")
    pp.run(_job(corpus, out))
    assert content_hash(str(out)) == content_hash(str(tmp_path / "clean"))


def test_cli_summary_and_user_errors(corpus, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("preprocess_data", REPO / "tools" / "preprocess_data.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    rc = cli.main(["speech", "--tokenizer", str(TOKENIZER), "--units", corpus.units, "--out-prefix", str(tmp_path / "s"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "60 documents" in out and "skipped 0 records" in out
    rc = cli.main(["interleaved", "--tokenizer", str(TOKENIZER), "--units", corpus.units, "--alignments", str(tmp_path / "none.jsonl"),
                   "--out-prefix", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "none.jsonl" in err and "Traceback" not in err
    rc = cli.main(["interleaved", "--tokenizer", str(TOKENIZER), "--units", corpus.units, "--alignments", corpus.alignments,
                   "--out-prefix", str(tmp_path / "y"), "--speech-fraction", "1.5"])
    assert rc == 1 and "--speech-fraction=1.5 must be within [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and "interleaved" in capsys.readouterr().out


@pytest.mark.parametrize("compat", ["slamkit", "none"])
def test_batch_preparation_equals_the_per_record_reference(corpus, vocab, tmp_path, monkeypatch, compat):
    """prepare_batch (vectorised over a shard) keeps, builds and rejects exactly what the
    per-record reference does, with the same messages, on records corrupted in many ways."""
    from megatron_slm.data import prepare as prep
    from megatron_slm.data.records import RecordError

    real_reference = prep.reference_batch

    rng = np.random.default_rng(0)
    units = [json.loads(x) for x in Path(corpus.units).read_text().splitlines()]
    aligns = [json.loads(x) for x in Path(corpus.alignments).read_text().splitlines()]

    def corrupt(i, u, a):
        w = a["words"]
        j = int(rng.integers(0, len(w)))
        kind = i % 16
        if kind == 1: u["units"][0] = 20                                   # outside [0, K)
        elif kind == 2: u["durations"] = u["durations"][:-1]               # length mismatch
        elif kind == 3: u["num_frames"] += 1                               # durations do not sum
        elif kind == 4: w[j]["start"] = w[j]["end"] + 0.1                  # start > end
        elif kind == 5 and j: w[j]["start"] = w[j - 1]["start"]            # overlaps the previous word
        elif kind == 6: w[-1]["end"] = u["audio_seconds"] + 1.0            # after the audio
        elif kind == 7: w[j]["word"] = "  "                                # empty word
        elif kind == 8: w[j]["start"] = "soon"                             # not a number
        elif kind == 9: del u["path"]                                      # missing field
        elif kind == 10: a["words"] = []                                   # empty transcript
        elif kind == 11: u["units"], u["durations"], u["num_frames"] = [], [], 0  # no units
        elif kind == 12: w[j]["word"] = 7                                  # a number as a word: refused, not "7"
        elif kind == 13: u["id"] = "nowhere"                               # no alignment
        elif kind == 14: u["unit_seconds"] = "0.04"                        # a string for a number
        elif kind == 15: u["units"][0] = 3.0                               # a float unit: refused, not 3
        return u, a

    pairs = [corrupt(i, u, a) for i, (u, a) in enumerate(zip(units, aligns))]
    path = tmp_path / "align.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for _, a in pairs))
    align = AlignmentIndex(str(path))
    records = [(f"units:{i + 1}", u) for i, (u, _) in enumerate(pairs)]
    fast = [r for i, r in enumerate(records) if i % 16 not in (12, 15)]
    # a record whose line holds a JSON boolean literal goes to the reference, which accepts one
    # inside a string: that shard is prepared by the reference
    records[0][1]["path"] = "true_story.flac"
    lines = [json.dumps(obj).encode() for _, obj in records]
    mk = Markers(vocab.speech_id, vocab.text_id, vocab.bos, vocab.eod)
    for recs, raw, vectorised in ((fast, None, True), (records, None, True), (records, lines, False)):
        calls = []
        monkeypatch.setattr(prep, "reference_batch", lambda *a: (calls.append(1), real_reference(*a))[1])
        kept, batch, audio, errors = prep.prepare_batch(recs, vocab, align, compat, lines=raw)
        assert (calls == []) == vectorised
        ref_kept, ref_docs, ref_errors = [], [], []
        for i, (where, obj) in enumerate(recs):
            try:
                u, rec = prepare_interleaved(json.loads(json.dumps(obj)), where, vocab, align, compat)
                ref_kept.append(i)
                ref_docs.append((u, rec.audio_seconds))
            except RecordError as e:
                ref_errors.append((i, e.reason, str(e)))
        assert kept == ref_kept and 0 < len(kept) < len(recs)
        assert [(i, e.reason, str(e)) for i, e in errors] == ref_errors
        assert len({r for _, r, _ in ref_errors}) >= 5
        cfg = InterleaveConfig(compat=compat)
        ids, offsets = il.assemble_batch(batch, il.draw_batch(batch, cfg, 9, 2), mk)
        for d, (u, secs) in enumerate(ref_docs):
            assert np.array_equal(ids[offsets[d]:offsets[d + 1]],
                                  il.assemble(u, il.draw(u, cfg, 9, 2), mk, keep_empty=compat == "slamkit"))
            assert audio[d] == pytest.approx(secs)


def test_out_prefix_never_replaces_an_input_or_its_sidecar(tmp_path, capsys):
    import shutil

    from conftest import CORPUS, TOKENIZER
    from megatron_slm.commands import preprocess_data

    units = tmp_path / "units.jsonl"
    shutil.copy(CORPUS / "units.jsonl", units)
    shutil.copy(CORPUS / "units.jsonl.meta.json", tmp_path / "units.jsonl.meta.json")
    sidecar = (tmp_path / "units.jsonl.meta.json").read_bytes()
    code = preprocess_data.main(["speech", "--tokenizer", str(TOKENIZER), "--units", str(units),
                                 "--out-prefix", str(units), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "refusing to write --out-prefix" in err and "Traceback" not in err, err
    assert (tmp_path / "units.jsonl.meta.json").read_bytes() == sidecar and not (tmp_path / "units.jsonl.bin").exists()


def _units_record(**change) -> dict:
    rec = {"id": "s01_03", "path": "audio/s01_03.flac", "units": [5, 7, 5], "durations": [2, 1, 3],
           "unit_seconds": 0.04, "num_frames": 6, "audio_seconds": 0.25}
    rec.update(change)
    return rec


BAD_UNITS = [
    (dict(units=[5, 3.7, 5]), "field 'units'[1] must be an integer, not 3.7"),
    (dict(units=[5, "7", 5]), "field 'units'[1] must be an integer, not '7'"),
    (dict(units=[5, True, 5]), "field 'units'[1] must be an integer, not True"),
    (dict(durations=[2, -1, 5]), "field 'durations'[1] must be >= 1, not -1"),
    (dict(durations=[2, 0, 4]), "field 'durations'[1] must be >= 1, not 0"),
    (dict(unit_seconds=0), "field 'unit_seconds' must be > 0, not 0"),
    (dict(unit_seconds=float("nan")), "field 'unit_seconds' must be a finite number, not nan"),
    (dict(audio_seconds=float("inf")), "field 'audio_seconds' must be a finite number, not inf"),
    (dict(num_frames=6.0), "field 'num_frames' must be an integer, not 6.0"),
    (dict(id=7), "field 'id' must be a string, not 7"),
    (dict(units=[5, 2 ** 70, 5]), "field 'units'[1] must be an integer, not 1.1805916207174113e+21"),  # orjson: a float
    (dict(units=[5, 100, 5]), "field 'units'[1] = 100 outside [0, 100)"),
]


@pytest.mark.parametrize("change,message", BAD_UNITS, ids=["units-float", "units-str", "units-bool", "durations-neg",
                                                           "durations-zero", "unit_seconds-0", "unit_seconds-nan",
                                                           "audio_seconds-inf", "num_frames-float", "id-int",
                                                           "units-huge", "units-K"])
def test_units_records_are_validated_never_coerced_on_every_path(change, message, tmp_path):
    """Before: 3.7, "7" and true became 3, 7 and 1; negative durations and unit_seconds 0 passed."""
    from megatron_slm.corpus.alignments import AlignmentIndex
    from megatron_slm.data.prepare import prepare_batch, prepare_interleaved
    from megatron_slm.data.records import RecordError, decode_json_line
    from megatron_slm.units.records import parse_record

    units = tmp_path / "units.jsonl"
    raw = [json.dumps(_units_record(id="ok")).encode(), json.dumps(_units_record(**change)).encode()]
    units.write_bytes(b"\n".join(raw) + b"\n")  # NaN/Infinity: literals the stdlib decoder reads back
    where = f"{units}:2"
    with pytest.raises(ValueError) as e:
        parse_record(decode_json_line(raw[1], where), where, num_units=100)
    assert str(e.value) == f"{where}: {message}"
    # preprocessing: the per-record reference and the vectorised shard path give the same message
    align = tmp_path / "align.jsonl"
    words = [{"word": "hi", "start": 0.0, "end": 0.1}, {"word": "there", "start": 0.12, "end": 0.24}]
    align.write_text("".join(json.dumps({"id": i, "words": words}) + "\n" for i in ("s01_03", "ok")))
    index, vocab = AlignmentIndex(str(align)), _vocab()
    records = [(f"{units}:{i + 1}", decode_json_line(r, f"{units}:{i + 1}")) for i, r in enumerate(raw)]
    with pytest.raises(RecordError) as ref:
        prepare_interleaved(records[1][1], where, vocab, index)
    assert str(ref.value) == f"{where}: {message}" and ref.value.reason == "invalid_units"
    for lines in (raw, None):  # with the raw lines (preprocessing) and without (any other caller)
        kept, _, _, errors = prepare_batch(records, vocab, index, lines=lines)
        assert kept == [0] and [str(err) for _, err in errors] == [f"{where}: {message}"]


_VOCAB = []


def _vocab():
    from megatron_slm.vocab import SpeechVocab

    if not _VOCAB:
        _VOCAB.append(SpeechVocab.from_pretrained(str(TOKENIZER), num_units=100))
    return _VOCAB[0]


def test_duplicate_ids_are_matched_after_json_decoding_and_an_empty_result_keeps_the_old_dataset(tmp_path):
    """A duplicate spelled with JSON escapes was stored twice; 0 usable records exited 0 and
    replaced an existing dataset with an empty one."""
    from megatron_slm.commands import preprocess_data
    from megatron_slm.data.preprocess import PreprocessJob, PreprocessError, run

    units = (CORPUS / "units.jsonl").read_text().splitlines()[:6]
    first = json.loads(units[2])
    escaped = units[2].replace(f'"{first["id"]}"', json.dumps(first["id"]).replace("0", "\\u0030"), 1)
    assert escaped != units[2] and json.loads(escaped)["id"] == first["id"]
    src = tmp_path / "units.jsonl"
    src.write_text("\n".join(units + [escaped]) + "\n")
    shutil.copy(CORPUS / "units.jsonl.meta.json", tmp_path / "units.jsonl.meta.json")
    prefix = tmp_path / "data" / "speech"
    job = dict(kind="speech", tokenizer=str(TOKENIZER), out_prefix=str(prefix), progress=False)
    meta = run(PreprocessJob(inputs=[str(src)], **job))
    assert meta["documents"] == 6 and meta["skipped"]["counts"] == {"duplicate_id": 1}
    before = {p.name: p.read_bytes() for p in prefix.parent.iterdir()}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(dict(json.loads(u), units=[3.7] * len(json.loads(u)["units"]))) + "\n"
                           for u in units))
    shutil.copy(CORPUS / "units.jsonl.meta.json", tmp_path / "bad.jsonl.meta.json")
    with pytest.raises(PreprocessError, match=r"no usable records \(6 invalid_units\); first: .*bad.jsonl:1: "
                                              r"field 'units'\[0\] must be an integer, not 3.7; the existing dataset"):
        run(PreprocessJob(inputs=[str(bad)], **job))
    assert {p.name: p.read_bytes() for p in prefix.parent.iterdir() if not p.name.endswith(".tmp")} == before
    assert preprocess_data.main(["speech", "--tokenizer", str(TOKENIZER), "--units", str(bad),
                                 "--out-prefix", str(prefix), "--quiet"]) == 1
