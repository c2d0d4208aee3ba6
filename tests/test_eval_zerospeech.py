"""ZeroSpeech 2021 layouts and scoring: per-id voice averaging (ties 0.5) and frequency bands
equal a hand computation, next to our per-pair accuracy; eval_slm --submission writes the
official submission layout."""
import csv
import json
from pathlib import Path

import pytest
import yaml

from megatron_slm.commands import eval_slm, prepare_eval_data
from megatron_slm.eval.benchmarks import zerospeech
from megatron_slm.eval.benchmarks.zerospeech import read_sblimp, read_swuggy
from megatron_slm.eval.scoring import ItemScore

from conftest import CORPUS, TOKENIZER

FILES = sorted((CORPUS / "audio").glob("*.flac"))

# (id, voice, frequency): A is oov with 2 voices, B in band "1-5" with 1, C in "21-100" with 3
LEXICAL = [("A", "v1", 0), ("A", "v2", 0), ("B", "v1", 3), ("C", "v1", 50), ("C", "v2", 50), ("C", "v3", 50)]
LEX_COLUMNS = ["filename", "id", "voice", "frequency", "word", "phones", "length", "correct"]


def _write_lexical(root: Path) -> Path:
    import soundfile as sf

    d = root / "lexical" / "dev"
    d.mkdir(parents=True)
    rows = []
    for i, (wid, voice, freq) in enumerate(LEXICAL):
        for correct, f in ((1, FILES[2 * i]), (0, FILES[2 * i + 1])):
            name = f"{wid}{voice}{'w' if correct else 'n'}"
            audio, sr = sf.read(f, dtype="int16")
            sf.write(d / f"{name}.wav", audio, sr)
            rows.append([name, wid, voice, freq if correct else "", f"word{wid}" if correct else f"nonw{wid}",
                         "a b c", 3, correct])
    with open(d / "gold.csv", "w", newline="") as f:
        csv.writer(f).writerows([LEX_COLUMNS, *rows])
    return d


def _scores(specs, outcomes):
    """ItemScores with the given outcomes (1 win, 0.5 tie, 0 loss) in gold order."""
    value = {1: (-1.0, -2.0), 0.5: (-1.5, -1.5), 0: (-3.0, -2.5)}
    return [ItemScore(s.id, s.task, s.part, value[o][0], [value[o][1]]) for s, o in zip(specs, outcomes)]


def test_lexical_and_syntactic_aggregation_by_hand(tmp_path):
    _write_lexical(tmp_path)
    specs = read_swuggy(str(tmp_path), "dev")
    assert [s.id for s in specs] == ["A/v1", "A/v2", "B/v1", "C/v1", "C/v2", "C/v3"]
    assert specs[0].meta["zerospeech"] == {"set": "lexical", "split": "dev", "files": ["Av1w", "Av1n"],
                                           "id": "A", "voice": "v1", "frequency": "0", "length": "3"}
    outcomes = [1, 0.5, 0, 1, 1, 0]
    got = zerospeech.official(specs, _scores(specs, outcomes))
    a, b, c = (1 + 0.5) / 2, 0.0, (1 + 1 + 0) / 3
    assert got["score"] == pytest.approx((a + b + c) / 3)  # 0.4722, while per pair it is 3.5 / 6 = 0.583
    assert got["n_ids"] == 3 and got["n_pairs"] == 6
    assert got["by_frequency"] == {"oov": {"score": a, "n": 1}, "1-5": {"score": b, "n": 1},
                                   "21-100": {"score": pytest.approx(c), "n": 1}}
    assert got["invocab"] == pytest.approx((b + c) / 2)
    # official bins are right-open: 1..4 -> "1-5", 5 -> "6-20", 100 -> ">100"
    assert [zerospeech.band(f) for f in (0, 1, 4, 5, 19, 20, 99, 100)] == \
        ["oov", "1-5", "1-5", "6-20", "6-20", "21-100", "21-100", ">100"]

    # syntactic: ids are (type, subtype, id); two voices of one id average, the other type alone
    d = tmp_path / "syntactic" / "dev"
    d.mkdir(parents=True)
    rows = [["filename", "voice", "type", "subtype", "transcription", "id", "correct"]]
    for i, (typ, sid, voice) in enumerate([("agr", "1", "v1"), ("agr", "1", "v2"), ("islands", "7", "v1")]):
        for correct in (1, 0):
            (d / f"s{i}{correct}.wav").write_bytes(b"")  # existence is what the reader checks
            rows.append([f"s{i}{correct}", voice, typ, "sub", "a sentence", sid, correct])
    with open(d / "gold.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    specs = read_sblimp(str(tmp_path), "dev")
    got = zerospeech.official(specs, _scores(specs, [1, 0, 0.5]))
    assert got["score"] == pytest.approx(((1 + 0) / 2 + 0.5) / 2) and got["n_ids"] == 2
    assert got["by_type"] == {"agr": {"score": 0.5, "n": 1}, "islands": {"score": 0.5, "n": 1}}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from megatron_slm.testing.random_hf import make_random_hf_model
    from megatron_slm.vocab import SpeechVocab

    root = tmp_path_factory.mktemp("zs_model")
    vocab = SpeechVocab.from_pretrained(str(TOKENIZER), num_units=100)
    vocab.save(root / "tok")
    return make_random_hf_model(root / "hf", "llama", root / "tok", hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                vocab_size=vocab.vocab_size, max_position_embeddings=512, std=0.2)


def _hand_official(gold: Path, submission: Path) -> float:
    """The official recipe from the two files alone: pair per (id, voice), mean per id, mean."""
    score = dict(line.split() for line in submission.read_text().splitlines())
    pairs: dict = {}
    for row in csv.DictReader(open(gold)):
        pairs.setdefault((row["id"], row["voice"]), {})[row["correct"]] = float(score[row["filename"]])
    per_id: dict = {}
    for (wid, _), p in pairs.items():
        per_id.setdefault(wid, []).append(1.0 if p["1"] > p["0"] else 0.5 if p["1"] == p["0"] else 0.0)
    return sum(sum(v) / len(v) for v in per_id.values()) / len(per_id)


def test_eval_writes_the_official_submission(tmp_path, model, capsys):
    d = _write_lexical(tmp_path / "zr")
    data = tmp_path / "eval"
    assert prepare_eval_data.main(["swuggy", "--src", str(tmp_path / "zr"), "--out", str(data / "swuggy.jsonl"),
                                   "--units-from", "mel", "--kmeans", str(CORPUS / "km_mel100.npy"),
                                   "--no-progress"]) == 0
    sub = tmp_path / "submission"
    assert eval_slm.main(["--hf-dir", str(model), "--tasks", "swuggy", "--data", str(data), "--bootstrap", "20",
                          "--out", str(tmp_path / "report.json"), "--submission", str(sub)]) == 0
    out = capsys.readouterr().out
    assert "ZeroSpeech 2021 (per id)" in out and "complete meta.yaml" in out
    lines = (sub / "lexical" / "dev.txt").read_text().splitlines()
    names = [line.split(" ")[0] for line in lines]
    assert sorted(names) == names == sorted(p.stem for p in d.glob("*.wav"))  # every file once, no path/extension
    assert all(len(line.split(" ")) == 2 and float(line.split(" ")[1]) < 0 for line in lines)
    meta = yaml.safe_load((sub / "meta.yaml").read_text())
    assert set(meta) == {"author", "affiliation", "description", "open_source", "train_set", "gpu_budget", "parameters"}
    assert isinstance(meta["gpu_budget"], float) and set(meta["parameters"]) == {"phonetic", "semantic"}
    report = json.loads((tmp_path / "report.json").read_text())["tasks"]["swuggy"]
    z = report["zerospeech2021"]
    assert z["score"] == pytest.approx(_hand_official(d / "gold.csv", sub / "lexical" / "dev.txt"))
    assert z["metric"].startswith("ZeroSpeech 2021") and report["n"] == z["n_pairs"] == 6 and z["n_ids"] == 3
    # a benchmark without gold.csv has nothing to submit
    assert prepare_eval_data.main(["word-shuffle", "--units-file", str(CORPUS / "units.jsonl"), "--alignments",
                                   str(CORPUS / "alignments.jsonl"), "--out", str(data / "ws.jsonl")]) == 0
    assert eval_slm.main(["--hf-dir", str(model), "--tasks", "ws", "--data", str(data), "--bootstrap", "0",
                          "--submission", str(tmp_path / "none")]) == 1
    assert "none of the scored benchmarks" in capsys.readouterr().err


def _edit_gold(d: Path, edit) -> Path:
    gold = d / "gold.csv"
    rows = list(csv.reader(open(gold, newline="")))
    with open(gold, "w", newline="") as f:
        csv.writer(f).writerows(edit(rows))
    return gold


def _set(row: int, column: str, value: str):
    def edit(rows):
        rows[row][LEX_COLUMNS.index(column)] = value
        return rows
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set(1, "id", ""), "gold.csv:2: field 'id' is empty"),
    (_set(3, "frequency", "many"), "gold.csv:4: field 'frequency' must be a count >= 0, got 'many'"),
    (_set(1, "frequency", "-1"), "gold.csv:2: field 'frequency' must be a count >= 0"),
    (lambda rows: rows[:1], "gold.csv: no rows after the header"),
    (lambda rows: rows + [[rows[1][0], "Z", "v1", "", "x", "a", 1, 0]],
     "field 'filename' 'Av1w' is marked correct=0 here and correct=1 on line 2"),
])
def test_bad_gold_rows_are_refused_naming_file_line_and_field(tmp_path, edit, message):
    from megatron_slm.eval.benchmarks.spec import PrepareError

    _edit_gold(_write_lexical(tmp_path), edit)
    with pytest.raises(PrepareError) as e:
        read_swuggy(str(tmp_path))
    assert message in str(e.value) and str(tmp_path) in str(e.value)
