"""The one output guard (megatron_slm/outputs.py): files and directories a tool writes are never
an input, inside an input, someone else's files or (without --force) an existing file, and
names made from ids never collide. The commands that write in place go through it."""
from __future__ import annotations

import pytest

from megatron_slm import outputs
from megatron_slm.outputs import OutputError, guard_distinct, guard_output_file, guard_reused_dir, output_name


def test_a_file_output_never_lands_on_an_input_or_an_existing_file(tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text("{}\n")
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(OutputError, match="is the input"):
        guard_output_file(items, [items], force=True)
    with pytest.raises(OutputError, match="is inside the input"):
        guard_output_file(model / "report.json", [model], force=True)
    with pytest.raises(OutputError, match="already exists .*--force"):
        guard_output_file(items, [model])
    guard_output_file(items, [model], force=True)   # replacing one's own earlier output
    guard_output_file(items, [model], resume=True)  # appending to it
    with pytest.raises(OutputError, match="is a directory"):
        guard_output_file(model, [], force=True)
    with pytest.raises(OutputError, match="items.jsonl is a file, not a directory"):
        guard_output_file(items / "report.json", [], force=True)
    with pytest.raises(OutputError, match="--item-scores and --out name the same file"):
        guard_distinct({"--out": tmp_path / "a.json", "--item-scores": tmp_path / "x" / ".." / "a.json"})


def test_a_directory_written_in_place_must_be_empty_new_or_ours(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds files no megatron-slm tool wrote"):
        guard_reused_dir(foreign, "test")
    guard_reused_dir(tmp_path / "new", "test")
    assert outputs.is_ours(tmp_path / "new")
    (tmp_path / "new" / "plan.csv").write_text("x")
    guard_reused_dir(tmp_path / "new", "test")  # ours: reused
    old = tmp_path / "old"  # made before markers existed: its own manifest identifies it
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    guard_reused_dir(old, "test", own_file="manifest.json")
    audio = tmp_path / "prompts"
    audio.mkdir()
    with pytest.raises(OutputError, match="is the input"):
        guard_reused_dir(audio, "generate", [audio], flag="--wav-dir")


def test_names_made_from_ids_are_distinct_and_stable():
    ids = ["a/b", "a_b", "a b", "a:b", "A_b", "..", "", "x" * 300, "ü"]
    names = [output_name(i) for i in ids]
    assert len(set(names)) == len(ids), names
    assert output_name("a_b") == "a_b" and output_name("s01_01") == "s01_01"  # safe ids keep their name
    assert output_name("a/b") == output_name("a/b") and "/" not in output_name("a/b")
    assert all(len(n) <= 120 and n and not n.startswith(".") for n in names)


def test_story_corpus_and_scaling_plan_refuse_a_directory_of_foreign_files(tmp_path, capsys):
    from megatron_slm.commands import make_story_corpus, scaling

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("not a corpus")
    assert make_story_corpus.main(["--out", str(foreign), "--hours", "0.01", "--quiet"]) == 2
    assert "holds files no megatron-slm tool wrote" in capsys.readouterr().err
    assert scaling.main(["plan", "--family", "qwen2.5", "--budgets", "1e19", "--out", str(foreign)]) == 2
    assert "holds files no megatron-slm tool wrote" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
