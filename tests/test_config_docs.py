"""docs/config.md is generated from the typed schema and a drift fails here."""
from __future__ import annotations

from conftest import REPO
from megatron_slm.config import iter_fields
from test_recipes import _load_tool


def test_committed_reference_matches_the_schema(capsys):
    tool = _load_tool("gen_config_docs")
    assert tool.main(["--check"]) == 0, capsys.readouterr().err
    text = (REPO / "docs" / "config.md").read_text()
    for key, type_name, _, _ in iter_fields():
        assert (f"## `{key}`" if type_name == "section" else f"| `{key}` |") in text, key


def test_a_schema_change_is_detected(tmp_path, monkeypatch, capsys):
    tool = _load_tool("gen_config_docs")
    out = tmp_path / "config.md"
    assert tool.main(["--out", str(out)]) == 0 and tool.main(["--check", "--out", str(out)]) == 0
    fields = list(iter_fields())
    extra = ("train.new_knob", "int", 3, "a field added to the schema")
    monkeypatch.setattr(tool, "iter_fields", lambda: iter(fields + [extra]))
    assert tool.main(["--check", "--out", str(out)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert "| `train.new_knob` | int | `3` | a field added to the schema |" in tool.render()
