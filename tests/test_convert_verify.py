"""`verify` on real models: a tolerance scaled to depth and logit magnitude, top-1 agreement and
mean KL beside the max difference, and a console that shows the verdict only."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO


def test_tolerance_scales_with_depth_and_logits_and_still_catches_a_wrong_mapping():
    from megatron_slm.convert.verify import VerifyResult, scaled_tolerance

    assert scaled_tolerance(4, 3.0) == 1e-4  # tiny test models keep the strict floor
    smollm = scaled_tolerance(30, 28.0)  # SmolLM2-135M: 30 fp32 layers, logits up to 28
    assert 1.3e-4 < smollm < 1e-3  # its correct conversion (max diff 1.3e-4) passes ...
    assert scaled_tolerance(36, 40.0) < 1e-2  # ... and a mapping error (>= 1e-2) fails even for deep models
    r = VerifyResult(1.3e-4, 1e-5, 49154, 64, smollm, top1_agreement=1.0, mean_kl=1e-10, max_abs_logit=28.0,
                     scaled=True)
    assert r.ok and "top-1 agreement 100.00%" in r.line() and "mean KL" in r.line()


@pytest.mark.slow
def test_verify_cli_at_tp2_prints_only_its_verdict(tmp_path):
    from megatron_slm.testing.tiny_slm import make_tiny_slm

    mc, hf = make_tiny_slm(tmp_path / "slm", num_units=20, tp=1, pp=1, num_hidden_layers=2)
    verify = lambda mcore: subprocess.run(  # noqa: E731
        [sys.executable, str(REPO / "tools" / "convert_checkpoint.py"), "verify", "--hf-dir", str(hf),
         "--mcore-dir", str(mcore), "--tp", "2", "--seq-length", "8"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    proc = verify(mc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK: max |logit diff|") and "top-1 agreement 100.00%" in proc.stdout
    assert proc.stderr.strip() == "", proc.stderr[-3000:]
    # A wrong path fails on both ranks: one line, without the launcher's traceback and report.
    proc = verify(tmp_path / "missing")
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: no slm_model.json (not a "
                                                f"megatron-slm checkpoint directory)"], proc.stderr[-3000:]
