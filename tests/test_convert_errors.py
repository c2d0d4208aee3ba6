"""tools/convert_checkpoint.py on bad input: it never writes over its input (or, with --force, over a
directory it did not write), and a broken HF config or a missing checkpoint shard is named."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import CONVERT, one_error_line, run_python


def convert_in_process(capsys, args) -> subprocess.CompletedProcess:
    """tools/convert_checkpoint.py in this process (a refusal needs no fresh interpreter: ~6 s saved each)."""
    from megatron_slm.commands import convert_checkpoint

    capsys.readouterr()
    rc = convert_checkpoint.main([str(a) for a in args])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
def test_conversion_never_writes_over_its_input(converted, tmp_path, capsys):
    ckpt, base = converted / "ckpt", converted / "base"
    before = sorted(p.name for p in ckpt.rglob("*"))
    for args in (["hf-to-mcore", "--hf-dir", base, "--out", base, "--force"],
                 ["hf-to-mcore", "--hf-dir", base, "--out", converted, "--force"],  # contains the input
                 ["mcore-to-hf", "--mcore-dir", ckpt, "--out", ckpt, "--force"],
                 ["mcore-to-hf", "--mcore-dir", ckpt, "--out", ckpt / "hf", "--force"]):  # inside the input
        line = one_error_line(convert_in_process(capsys, args))
        assert "refusing to write" in line and "the input" in line, line
    assert sorted(p.name for p in ckpt.rglob("*")) == before and (base / "config.json").is_file()
    # --force replaces a directory only when a megatron-slm tool wrote it
    mine = tmp_path / "precious"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    line = one_error_line(convert_in_process(capsys, ["mcore-to-hf", "--mcore-dir", ckpt, "--out", mine, "--force"]))
    assert "was not written by a megatron-slm tool" in line and (mine / "notes.txt").read_text() == "keep me"
    run_python([CONVERT, "mcore-to-hf", "--mcore-dir", ckpt, "--out", tmp_path / "hf"], cwd=tmp_path)
    run_python([CONVERT, "mcore-to-hf", "--mcore-dir", ckpt, "--out", tmp_path / "hf", "--force"], cwd=tmp_path)
    assert (tmp_path / "hf" / "config.json").is_file()


def _broken_copy(src: Path, dst: Path, edit) -> Path:
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(edit(config)))
    return dst


@pytest.mark.parametrize("edit, message", [
    (lambda c: [c], "expected a JSON object of model settings, found a list"),
    (lambda c: dict(c, num_attention_heads=2.5), "field 'num_attention_heads' must be a positive integer, found 2.5"),
    (lambda c: dict(c, num_attention_heads=0), "field 'num_attention_heads' must be a positive integer, found 0"),
    (lambda c: dict(c, num_hidden_layers=5), "num_hidden_layers=5 but the weights in"),
])
def test_broken_hf_configs_are_named(converted, tmp_path, edit, message):
    from megatron_slm.convert.families import ConversionError
    from megatron_slm.convert.hf_to_mcore import convert_hf_to_mcore

    bad = _broken_copy(converted / "base", tmp_path / "bad", edit)
    with pytest.raises(ConversionError, match=r"bad/config.json"):
        try:
            convert_hf_to_mcore(bad, tmp_path / "out", progress=False)
        except ConversionError as e:
            assert message in str(e), e
            raise
    assert not (tmp_path / "out").exists()


def test_a_missing_checkpoint_shard_is_named(converted, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(converted / "ckpt", ckpt)
    shard = next((ckpt / "iter_0000000").glob("*.distcp"))
    shard.unlink()
    line = one_error_line(run_python([CONVERT, "mcore-to-hf", "--mcore-dir", ckpt, "--out", tmp_path / "hf"],
                                     cwd=tmp_path, check=False))
    assert f"the checkpoint file {shard.name} is missing" in line, line
