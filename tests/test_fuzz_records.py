"""Fuzzing the record readers (units records, alignments, eval items, ZeroSpeech gold.csv, HF benchmark datasets).

The property, for every generated record: it is either accepted unchanged (same values, same
JSON types -- nothing converted) or rejected with a message naming its file:line and a field;
never a traceback. A record is a valid one with one field replaced by an arbitrary JSON value,
an element of one of its lists replaced, or a field deleted. A second property ties the two
ways preprocessing reads units records: the vectorised shard path accepts and rejects exactly
what the per-record reference does, with the same messages.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from megatron_slm.corpus.alignments import AlignmentIndex
from megatron_slm.corpus.words import AlignmentError, validate
from megatron_slm.eval.items import FORMAT, ItemError, read_items
from megatron_slm.units.records import RECORD_FIELDS, iter_records

from conftest import TOKENIZER

# no example database: every run draws afresh, as CI does (150 records per reader, ~2 s each)
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# what a JSON decoder can hand a reader (orjson reads integers up to the u64 range as ints)
scalars = (st.none() | st.booleans() | st.integers(min_value=-2 ** 63, max_value=2 ** 64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=3), inner, max_size=2), max_leaves=4)


def mutate(draw, obj: dict, lists: dict[str, list[str]]) -> dict:
    """`obj` with one change: a field deleted or replaced, or one element (or one key of an
    element) of a list field replaced. `lists` maps list fields to the keys of their elements
    ([] for scalar elements)."""
    obj = json.loads(json.dumps(obj))
    field = draw(st.sampled_from(sorted(obj) + ["extra"]))
    how = draw(st.sampled_from(["delete", "replace", "element"]))
    if how == "element" and field in lists and obj[field]:
        i = draw(st.integers(0, len(obj[field]) - 1))
        keys = lists[field]
        if keys:
            key = draw(st.sampled_from(keys))
            if draw(st.booleans()):
                obj[field][i].pop(key, None)
            else:
                obj[field][i][key] = draw(json_values)
        else:
            obj[field][i] = draw(json_values)
    elif how == "delete":
        obj.pop(field, None)
    else:
        obj[field] = draw(json_values)
    return obj


def same_json(a, b) -> bool:
    """Equal values of equal JSON types, recursively (True is not 1, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return a == b


def names_line_and_field(message: str, where: str) -> bool:
    return message.startswith(f"{where}: ") and ("field '" in message or " word " in message)


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# ----------------------------------------------------------------------------- units records

UNITS = {"id": "u1", "path": "a/u1.flac", "units": [5, 7, 5, 9], "durations": [10, 10, 10, 3], "unit_seconds": 0.04,
         "num_frames": 33, "audio_seconds": 1.32}


@st.composite
def units_records(draw):
    return mutate(draw, UNITS, {"units": [], "durations": []})


@FUZZ
@given(rec=units_records())
def test_units_records(tmp_path, rec):
    path = write(tmp_path / "units.jsonl", [json.dumps(UNITS), json.dumps(rec)])
    try:
        got = list(iter_records(path))
    except ValueError as e:
        assert names_line_and_field(str(e), f"{path}:2"), str(e)
        return
    decoded = json.loads(path.read_text().splitlines()[1])
    assert all(same_json(getattr(got[1], f), decoded[f]) for f in RECORD_FIELDS), (got[1], decoded)
    assert all(type(u) is int and u >= 0 for u in got[1].units) and all(type(d) is int and d >= 1 for d in got[1].durations)
    assert got[1].unit_seconds > 0 and math.isfinite(got[1].unit_seconds) and sum(got[1].durations) == got[1].num_frames


# ----------------------------------------------------------------------------- alignments

ALIGN = {"id": "u1", "audio": "a/u1.flac", "text": "hello big world",
         "words": [{"word": "hello", "start": 0.1, "end": 0.4}, {"word": "big", "start": 0.5, "end": 0.7},
                   {"word": "world", "start": 0.8, "end": 1.2}]}


@st.composite
def alignment_records(draw):
    return mutate(draw, ALIGN, {"words": ["word", "start", "end"]})


@FUZZ
@given(rec=alignment_records())
def test_alignments(tmp_path, rec):
    first = dict(ALIGN, id="u0")
    path = write(tmp_path / "align.jsonl", [json.dumps(first), json.dumps(rec)])
    where = f"{path}:2"
    index = AlignmentIndex(str(path))
    if index.problems:  # refused while indexing: a bad id, or the id of line 1 again
        assert all(m.startswith(f"{where}: ") and ("field 'id'" in m or "appears again" in m)
                   for _, m in index.problems), index.problems
        return
    uid = rec["id"]
    try:
        al = validate(index.get(uid), audio_seconds=2.0)
    except AlignmentError as e:
        assert names_line_and_field(str(e), where), str(e)
        return
    decoded = json.loads(path.read_text().splitlines()[1])
    words = decoded["words"]
    assert type(decoded["id"]) is str and al.id == decoded["id"]
    assert al.words == [w["word"].strip() for w in words] and all(type(w["word"]) is str for w in words)
    for key, got in (("start", al.starts), ("end", al.ends)):
        assert all(type(w[key]) in (int, float) for w in words)
        assert got.tolist() == [float(w[key]) for w in words]


# ----------------------------------------------------------------------------- eval items

ITEM = {"id": "i1", "task": "t", "part": None, "positive": {"units": [1, 2, 3], "text": "a b"},
        "negatives": [{"units": [3, 2, 1]}, {"text": "b a"}], "prompt": None, "meta": {"k": 1}}
HEADER = json.dumps({"format": FORMAT, "version": 1, "task": "t", "unit_identity": None})


@st.composite
def items(draw):
    item = mutate(draw, ITEM, {"negatives": ["units", "text"]})
    if draw(st.booleans()) and isinstance(item.get("positive"), dict):  # inside a candidate
        item["positive"] = mutate(draw, item["positive"], {"units": []})
    return item


@FUZZ
@given(item=items())
def test_eval_items(tmp_path, item):
    path = write(tmp_path / "items.jsonl", [HEADER, json.dumps(item)])
    try:
        got = read_items(path).items[0]
    except ItemError as e:
        assert names_line_and_field(str(e), f"{path}:2"), str(e)
        return
    decoded = json.loads(path.read_text().splitlines()[1])
    assert same_json(got.id, decoded["id"]) and same_json(got.task, decoded["task"])
    assert same_json(got.part, decoded.get("part")) and same_json(got.meta, decoded.get("meta") or {})
    cands = [(got.positive, decoded["positive"])] + list(zip(got.negatives, decoded["negatives"]))
    for cand, ref in cands:
        assert same_json(cand.to_json(), {k: v for k, v in ref.items() if k in ("units", "text") and v is not None})
        assert cand.units is None or all(type(u) is int and u >= 0 for u in cand.units)


# ----------------------------------------------------------------------------- preprocessing: one validator


@pytest.fixture(scope="module")
def vocab():
    from megatron_slm.vocab import SpeechVocab

    return SpeechVocab.from_pretrained(str(TOKENIZER), num_units=100)


@st.composite
def record_pairs(draw):
    """A units record and its alignment, either one mutated; floats may be NaN/Infinity here
    (preprocessing reads lines the stdlib decoder accepts)."""
    units, align = dict(UNITS), dict(ALIGN)
    if draw(st.booleans()):
        units = mutate(draw, units, {"units": [], "durations": []})
    else:
        align = mutate(draw, align, {"words": ["word", "start", "end"]})
    if draw(st.integers(0, 9)) == 0:
        units["unit_seconds"] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return units, align


@FUZZ
@given(pair=record_pairs())
def test_vectorised_preprocessing_equals_the_reference(tmp_path, vocab, pair):
    from megatron_slm.data.prepare import prepare_batch, prepare_interleaved
    from megatron_slm.data.records import RecordError, decode_json_line

    units, align = pair
    path = write(tmp_path / "align.jsonl", [json.dumps(dict(ALIGN, id="u0")), json.dumps(align)])
    index = AlignmentIndex(str(path))
    raw = [json.dumps(dict(UNITS, id="u0")).encode(), json.dumps(units).encode()]
    records = []
    for i, line in enumerate(raw):
        try:
            records.append((f"units:{i + 1}", decode_json_line(line, f"units:{i + 1}")))
        except RecordError as e:
            assert e.reason == "malformed_json" and str(e).startswith(f"units:{i + 1}: ")
            return
    ref_kept, ref_errors = [], []
    for i, (where, obj) in enumerate(records):
        try:
            prepare_interleaved(json.loads(json.dumps(obj)), where, vocab, index)
            ref_kept.append(i)
        except RecordError as e:
            ref_errors.append((i, e.reason, str(e)))
            assert str(e).startswith(f"{where}: ") or str(e).startswith(f"{path}:"), str(e)
    assert 0 in ref_kept
    for lines in (raw, None):
        kept, _, _, errors = prepare_batch(records, vocab, index, lines=lines)
        assert kept == ref_kept and [(i, e.reason, str(e)) for i, e in errors] == ref_errors


# ----------------------------------------------------------------------------- ZeroSpeech gold.csv

GOLD_COLUMNS = ["filename", "id", "voice", "frequency", "word", "correct"]
GOLD = [["aw", "a", "v1", "3", "cat", "1"], ["an", "a", "v1", "", "kat", "0"],
        ["bw", "b", "v1", "0", "dog", "1"], ["bn", "b", "v1", "", "dag", "0"]]
cells = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=6)


@st.composite
def gold_tables(draw):
    """A valid sWUGGY gold.csv with one cell replaced by arbitrary text, a row cut short, or a row dropped."""
    rows = [list(r) for r in GOLD]
    i = draw(st.integers(0, len(rows) - 1))
    how = draw(st.sampled_from(["cell", "short", "drop"]))
    if how == "cell":
        rows[i][draw(st.integers(0, len(GOLD_COLUMNS) - 1))] = draw(cells)
    elif how == "short":
        rows[i] = rows[i][: draw(st.integers(0, len(GOLD_COLUMNS) - 1))]
    else:
        rows.pop(i)
    return rows


@FUZZ
@given(rows=gold_tables())
def test_zerospeech_gold(tmp_path, rows):
    import csv

    from megatron_slm.eval.benchmarks.spec import PrepareError
    from megatron_slm.eval.benchmarks.zerospeech import read_swuggy

    d = tmp_path / "lexical" / "dev"
    d.mkdir(parents=True, exist_ok=True)
    for name in {r[0] for r in GOLD}:
        (d / f"{name}.wav").write_bytes(b"")  # read_swuggy only needs the files to exist
    gold = d / "gold.csv"
    with open(gold, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([GOLD_COLUMNS, *rows])
    try:
        specs = read_swuggy(str(tmp_path))
    except PrepareError as e:
        msg = str(e)
        assert msg.startswith(f"{gold}") and any(s in msg for s in ("field '", "lines [", "audio file", "no rows")), msg
        return
    table = list(csv.DictReader(open(gold, newline="", encoding="utf-8")))
    assert {s.id for s in specs} == {f"{r['id']}/{r['voice']}" for r in table}  # ids as written, nothing converted
    for s in specs:
        pos = next(r for r in table if r["correct"] == "1" and f"{r['id']}/{r['voice']}" == s.id)
        assert s.meta["frequency"] == pos["frequency"] and s.positive.text == (pos["word"] or None)


# ----------------------------------------------------------------------------- HF benchmark datasets

HF_FUZZ = settings(max_examples=25, deadline=None, database=None,  # each example writes and loads a dataset
                   suppress_health_check=[HealthCheck.function_scoped_fixture])
audio_cells = (st.none() | st.integers(-5, 5) | st.text(max_size=4) | st.binary(max_size=8)
               | st.fixed_dictionaries({"bytes": st.none() | st.binary(max_size=8), "path": st.none() | st.text(max_size=6)}))


@HF_FUZZ
@given(columns=st.dictionaries(st.sampled_from(["positive", "negative", "positive_audio", "extra"]),
                               st.lists(audio_cells, min_size=0, max_size=3), min_size=1, max_size=3))
def test_hf_benchmark_datasets(tmp_path, columns):
    """Any columns of any cell type: read_hf gives one candidate per row and column (whose bytes are
    there or named missing by row and column), or refuses naming the dataset; never a traceback."""
    datasets = pytest.importorskip("datasets")
    from megatron_slm.eval.benchmarks.hf import read_hf
    from megatron_slm.eval.benchmarks.spec import PrepareError

    n = min(len(v) for v in columns.values())
    data = {k: v[:n] for k, v in columns.items()}
    src = tmp_path / "ds"
    try:
        datasets.Dataset.from_dict(data).save_to_disk(str(src))
    except Exception:  # cells Arrow itself cannot hold (mixed types, no rows): not a dataset anyone could ship
        return
    try:
        specs = read_hf(str(src), "t")
    except PrepareError as e:
        assert str(e).startswith(str(src)), str(e)
        return
    assert len(specs) == n and all(len(s.negatives) == 1 for s in specs)
    for s in specs:
        for cand in (s.positive, *s.negatives):
            try:
                cand.source.data()
            except OSError as e:
                assert "holds no audio bytes" in str(e) and str(src) in str(e), str(e)
