"""Benchmarks as local Hugging Face datasets (sStoryCloze and SALMon column layouts, audio bytes
written by `datasets`) prepare to the same items as the equivalent folder layouts."""
import json
from pathlib import Path

import pytest

from conftest import CORPUS

datasets = pytest.importorskip("datasets")

from megatron_slm.commands import prepare_eval_data  # noqa: E402
from megatron_slm.eval.benchmarks.hf import is_hf_dataset  # noqa: E402

KM = str(CORPUS / "km_mel100.npy")
FILES = sorted((CORPUS / "audio").glob("*.flac"))[:8]


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _audio_dataset(columns: dict[str, list[Path]]):
    """A Dataset whose columns are Audio features holding the files' encoded bytes (the hub's
    storage: a struct of bytes and path, the Audio type in the schema metadata)."""
    st = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    data = {c: [{"bytes": f.read_bytes(), "path": f.name} for f in files] for c, files in columns.items()}
    n = len(next(iter(columns.values())))
    ds = datasets.Dataset.from_dict({**data, "extra": list(range(n))},
                                    features=datasets.Features({**{c: st for c in columns},
                                                                "extra": datasets.Value("int64")}))
    for c in columns:
        ds = ds.cast_column(c, datasets.Audio(decode=False))
    return ds


def _prepare(benchmark, src, out, *extra):
    rc = prepare_eval_data.main([benchmark, "--src", str(src), "--out", str(out), "--units-from", "mel",
                                 "--kmeans", KM, "--audio-backend", "soundfile", "--no-progress", *extra])
    lines = Path(out).read_text().splitlines() if rc == 0 else []
    return rc, [json.loads(x) for x in lines[1:]]


def _wav(src: Path, dst: Path) -> Path:
    import soundfile as sf

    audio, sr = sf.read(src, dtype="int16")
    sf.write(dst, audio, sr, subtype="PCM_16")  # the same samples, another container
    return dst


def test_storycloze_parquet_and_save_to_disk_match_the_folder(tmp_path):
    pos, neg = FILES[:3], FILES[3:6]
    ds = _audio_dataset({"positive": pos, "negative": neg})
    (tmp_path / "sSC" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "sSC" / "data" / "train-00000-of-00001.parquet"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "sSC_disk"))
    folder = tmp_path / "sSC_folder"
    folder.mkdir()
    for i, (p, n) in enumerate(zip(pos, neg)):
        (folder / f"{i}_correct.flac").write_bytes(p.read_bytes())
        (folder / f"{i}_incorrect.flac").write_bytes(n.read_bytes())
    assert is_hf_dataset(tmp_path / "sSC") and is_hf_dataset(tmp_path / "sSC_disk") and not is_hf_dataset(folder)

    rc, ref = _prepare("ssc", folder, tmp_path / "ref.jsonl")
    assert rc == 0 and [it["id"] for it in ref] == ["0", "1", "2"]
    for src in ("sSC", "sSC_disk"):
        rc, got = _prepare("ssc", tmp_path / src, tmp_path / f"{src}.jsonl")
        assert rc == 0 and got == ref
    header = [json.loads(x) for x in (tmp_path / "ref.jsonl").read_text().splitlines()[:1]]
    assert header == [json.loads(x) for x in (tmp_path / "sSC.jsonl").read_text().splitlines()[:1]]
    assert ref[0]["positive"]["units"] != ref[0]["negatives"][0]["units"]


def test_salmon_configs_match_the_folder_parts(tmp_path, capsys):
    parts = {"sentiment_consistency": (FILES[:2], FILES[2:4]), "speaker_consistency": (FILES[4:7], FILES[5:8])}
    hf, folder = tmp_path / "SALMon", tmp_path / "salmon_folder"
    for part, (pos, neg) in parts.items():
        (hf / part).mkdir(parents=True)
        _audio_dataset({"positive_audio": pos, "negative_audio": neg}).to_parquet(
            str(hf / part / "train-00000-of-00001.parquet"))
        (folder / part).mkdir(parents=True)
        for i, (p, n) in enumerate(zip(pos, neg)):
            _wav(p, folder / part / f"sample_{i}_0.wav")
            _wav(n, folder / part / f"sample_{i}_1.wav")
    rc, ref = _prepare("salmon", folder, tmp_path / "ref.jsonl")
    assert rc == 0 and len(ref) == 5
    rc, got = _prepare("salmon", hf, tmp_path / "hf.jsonl")
    assert rc == 0 and got == ref
    assert [(it["id"], it["part"]) for it in got][:3] == [("sentiment_consistency/0", "sentiment_consistency"),
                                                        ("sentiment_consistency/1", "sentiment_consistency"),
                                                        ("speaker_consistency/0", "speaker_consistency")]
    rc, one = _prepare("salmon", hf, tmp_path / "one.jsonl", "--parts", "speaker_consistency")
    assert rc == 0 and one == ref[2:]
    assert "2 parts" in capsys.readouterr().out


def test_wrong_columns_and_missing_audio_are_named(tmp_path, capsys):
    (tmp_path / "bad" / "data").mkdir(parents=True)
    _audio_dataset({"good": FILES[:1], "bad": FILES[1:2]}).to_parquet(
        str(tmp_path / "bad" / "data" / "train-00000-of-00001.parquet"))
    rc, _ = _prepare("ssc", tmp_path / "bad", tmp_path / "x.jsonl")
    err = capsys.readouterr().err
    assert rc == 1 and "columns ['bad', 'extra', 'good']" in err and "'positive'/'negative'" in err
    # a cell without bytes (and no file at its path) is reported, not scored
    st = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    ds = datasets.Dataset.from_dict({"positive": [{"bytes": FILES[0].read_bytes(), "path": "a.flac"}],
                                     "negative": [{"bytes": None, "path": "gone.flac"}]},
                                    features=datasets.Features({"positive": st, "negative": st}))
    ds.save_to_disk(str(tmp_path / "holes"))
    rc, _ = _prepare("ssc", tmp_path / "holes", tmp_path / "y.jsonl")
    err = capsys.readouterr().err
    assert rc == 1 and "could not be turned into units" in err and "holds no audio bytes" in err
    # an audio column of another type, and a config without rows: one line each, no traceback
    datasets.Dataset.from_dict({"positive": [1, 2], "negative": [3, 4]}).save_to_disk(str(tmp_path / "ints"))
    rc, _ = _prepare("ssc", tmp_path / "ints", tmp_path / "z.jsonl")
    err = capsys.readouterr().err
    assert rc == 1 and "column 'positive' holds Value('int64')" in err and "not audio" in err, err
    assert "Traceback" not in err and err.count("error:") == 1, err
    (tmp_path / "none" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"positive": [], "negative": []}, features=datasets.Features(
        {"positive": st, "negative": st})).to_parquet(str(tmp_path / "none" / "data" / "train-00000-of-00001.parquet"))
    rc, _ = _prepare("ssc", tmp_path / "none", tmp_path / "w.jsonl")
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and err.count("error:") == 1 and "none" in err, err


def test_silent_benchmark_audio_is_kept_with_a_warning(tmp_path, capsys):
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000, dtype=np.float32), 16000, format="FLAC")
    silent = tmp_path / "silent.flac"
    silent.write_bytes(buf.getvalue())
    (tmp_path / "sSC" / "data").mkdir(parents=True)
    _audio_dataset({"positive": [silent], "negative": FILES[1:2]}).to_parquet(
        str(tmp_path / "sSC" / "data" / "train-00000-of-00001.parquet"))
    rc, _ = _prepare("ssc", tmp_path / "sSC", tmp_path / "ssc.jsonl")
    err = capsys.readouterr().err
    assert rc == 0 and "warning: benchmark audio" in err and "silent" in err and "always ties" in err, err
