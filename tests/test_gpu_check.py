"""scripts/gpu_check.py on a CPU machine: the dry run a GPU node would follow, damaged wheelhouses,
failing steps that do not stop the others, the time limit that kills a whole process group, the
per-test pytest report; and the CUDA model configuration without Transformer Engine or Apex (the
GPU node's case), built here without a GPU."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY_CPU

GPU_CHECK = REPO / "scripts" / "gpu_check.py"
MAKE_WHEELHOUSE = REPO / "scripts" / "make_wheelhouse.sh"
STEPS = ["install", "gpu-tests", "train", "train-fp8", "units", "generate", "cpu-suite"]


@pytest.fixture()
def scripts_on_path(monkeypatch):
    """The package behind scripts/gpu_check.py is imported from scripts/, as the command does."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))


def run(cmd, cwd=REPO, env=None, timeout=300):
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, **(env or {})}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """A wheelhouse for this Python that takes everything installed here as present: our own
    wheel only, made without the network."""
    out = tmp_path_factory.mktemp("wheelhouse") / "wh"
    proc = run(["bash", MAKE_WHEELHOUSE, "--python", f"{sys.version_info[0]}.{sys.version_info[1]}", "--out", out,
                "--have-installed", "--mcore-versions", "", "--no-build-isolation"])
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
def test_dry_run_plans_every_step_for_the_node(wheelhouse, tmp_path):
    t = time.perf_counter()
    proc = run([sys.executable, GPU_CHECK, "--wheelhouse", wheelhouse, "--out", tmp_path / "out", "--dry-run"])
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - t < 120  # nothing heavy: a probe and a pytest collection
    plan = json.loads((tmp_path / "out" / "gpu_check_plan.json").read_text())
    manifest = json.loads((wheelhouse / "manifest.json").read_text())
    steps = {s["name"]: s for s in plan["steps"]}
    assert [s["name"] for s in plan["steps"]] == STEPS
    assert all(s["limit_s"] > 0 for s in plan["steps"]) and plan["limits_total_s"] <= plan["budget_s"] == 480
    assert not (tmp_path / "out" / "env").exists()  # nothing installed

    # the wheelhouse as resolved: our wheel, fits this Python, what the environment must bring itself
    wh = plan["wheelhouse"]
    assert wh["wheels"] == 1 and wh["fit_here"]["unfit"] == [] and wh["sha256"] == "ok"
    assert wh["install"][0] == f"megatron-slm[test]=={manifest['project']['version']}"
    assert "--no-index" in steps["install"]["command"] and steps["install"]["status"] == "run"
    provided = {re.match(r"[\w.-]+", r["requirement"]).group(0): r for r in wh["node_must_provide"]}
    assert {"torch", "megatron-core", "transformers"} <= set(provided) and all(r["ok"] for r in provided.values())

    # no CUDA here: the plan is for the documented node (one GPU, no Transformer Engine, no DALI)
    assert "documented node" in plan["predicted_for"] and "plan for the documented node" in proc.stdout
    gpu = steps["gpu-tests"]
    assert gpu["tests"] and all(t["reasons"] for t in gpu["tests"] if not t["runs"])
    not_run = {t["nodeid"]: t["reason"] for t in gpu["not_run"]}
    dali_tests = [n for n in not_run if n.startswith("tests/test_units_gpu.py")]
    assert dali_tests and all("dali" in not_run[n].lower() for n in dali_tests)
    assert any("2 GPUs" in r for r in not_run.values())
    assert all(f"cannot run: {n}" in proc.stdout for n in not_run)

    train = steps["train"]
    assert train["status"] == "run"
    assert all(o in train["command"] for o in ("model.preset=llama3.2-1b", "model.spec=local", "precision.dtype=bf16",
                                               "runtime.device=cuda", "data.source=synthetic"))
    assert 1.2e9 < train["model"]["params"] < 1.3e9 and train["model"]["tokens_per_step"] == 16 * 2048
    assert steps["train-fp8"]["status"] == "skip" and "Transformer Engine" in steps["train-fp8"]["reason"]
    assert steps["units"]["status"] == "run"
    if (REPO / "bench" / "generate.py").is_file():
        assert steps["generate"]["status"] == "run"
    else:
        assert steps["generate"]["status"] == "skip" and "not available yet" in steps["generate"]["reason"]
    assert steps["cpu-suite"]["status"] == "skip" and "no megatron-core" in steps["cpu-suite"]["reason"]


def test_damaged_or_missing_wheelhouse_is_one_clear_error(wheelhouse, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(wheelhouse, broken)
    wheel = next(broken.glob("megatron_slm-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    empty = tmp_path / "empty"
    empty.mkdir()
    newer = tmp_path / "newer"  # made by a later checkout whose manifest this one cannot read
    shutil.copytree(wheelhouse, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "format": 2}))
    for folder, message in ((broken, f"{wheel.name}: sha256 differs"), (empty, "no manifest.json"),
                            (tmp_path / "nowhere", "no such folder"), (newer, "format 2, this checkout reads")):
        proc = run([sys.executable, GPU_CHECK, "--wheelhouse", folder, "--out", tmp_path / "o", "--dry-run"])
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_failed_step_is_reported_and_the_rest_still_decided(wheelhouse, tmp_path):
    """A wheelhouse whose manifest names a project version it does not hold: the install fails
    (pip, no index), every later step says why it is skipped, the summaries are complete."""
    wrong = tmp_path / "wrong"
    shutil.copytree(wheelhouse, wrong)
    manifest = json.loads((wrong / "manifest.json").read_text())
    manifest["project"]["version"] = "9.9.9"
    (wrong / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    proc = run([sys.executable, GPU_CHECK, "--wheelhouse", wrong, "--out", out, "--steps", "install,train,cpu-suite"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == ["install", "train", "cpu-suite"]
    assert steps["install"]["status"] == "failed" and "megatron-slm[test]==9.9.9" in steps["install"]["reason"]
    assert (out / steps["install"]["log"]).is_file()
    assert steps["train"]["status"] == "skipped" and steps["train"]["reason"].startswith("needs the install step")
    assert steps["cpu-suite"]["status"] == "skipped"
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("## GPU check") and "| install (" in md and "| failed |" in md and "| skipped |" in md


def test_step_time_limit_kills_the_whole_process_group(wheelhouse, tmp_path, scripts_on_path):
    from gpucheck.cli import parse_args
    from gpucheck.results import Result, StepTimeout
    from gpucheck.runner import Check

    check = Check(parse_args(["--wheelhouse", str(wheelhouse), "--out", str(tmp_path)]))
    (tmp_path / "logs").mkdir()
    result = Result("demo", "demo", 1)
    pid_file = tmp_path / "grandchild.pid"
    t = time.perf_counter()
    with pytest.raises(StepTimeout, match="ran past 1 s"):
        check.run_cmd(result, ["bash", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], timeout=1)
    assert time.perf_counter() - t < 15
    time.sleep(0.5)
    grandchild = int(pid_file.read_text())
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]
    assert (tmp_path / result.log).read_text().count("sleep 60") == 1


def test_pytest_plugin_logs_every_outcome_with_its_reason(tmp_path, scripts_on_path):
    from gpucheck.plugin import read_test_log

    (tmp_path / "test_demo.py").write_text(
        "import pytest\n"
        "def test_ok():\n    pass\n"
        "def test_bad():\n    assert 1 == 2, 'one is not two'\n"
        "@pytest.mark.skip(reason='needs a thing')\ndef test_skipped():\n    pass\n"
        "@pytest.mark.skipif(True, reason='needs 2 GPUs')\ndef test_skipif():\n    pass\n")
    log = tmp_path / "log.jsonl"
    proc = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "gpucheck.plugin",
                "test_demo.py"], cwd=tmp_path, env={"PYTHONPATH": str(REPO / "scripts"), "GPU_CHECK_PYTEST_LOG": str(log)})
    assert proc.returncode == 1, proc.stdout
    tests = read_test_log(log)
    outcome = {k.split("::")[1]: (v["outcome"], v["reason"]) for k, v in tests.items()}
    assert outcome["test_ok"] == ("passed", None)
    assert outcome["test_bad"][0] == "failed" and "one is not two" in outcome["test_bad"][1]
    assert outcome["test_skipped"] == ("skipped", "needs a thing")
    assert outcome["test_skipif"] == ("skipped", "needs 2 GPUs")
    assert all(Path(v["rerun"].split("::")[0]) == tmp_path / "test_demo.py" for v in tests.values())


@pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is not None, reason="checks the no-TE case")
def test_cuda_local_spec_config_builds_without_te_or_apex():
    """A CUDA run without Transformer Engine takes the local spec: its torch RMSNorm refuses
    persist_layer_norm, and its fused softmax needs a compiled extension that only an Apex build
    brings. The model config must ask for neither (both crashed the first CUDA step before)."""
    from megatron.core.fusions.fused_softmax import FusedScaleMaskSoftmax
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.spec_utils import build_module

    from megatron_slm.config import load_config
    from megatron_slm.models.provider import build_transformer_config, layer_spec, resolve_arch
    from megatron_slm.models.spec import ModelSpec

    cfg = load_config(TINY_CPU,
                      ["runtime.device=cuda", "precision.dtype=bf16", "model.spec=auto"])
    arch, _ = resolve_arch(cfg)
    config = build_transformer_config(ModelSpec.from_config(cfg, arch, 1024), on_cuda=True)
    spec = layer_spec(ModelSpec.from_config(cfg, arch, 1024), on_cuda=True)
    norm = build_module(spec.submodules.input_layernorm, config=config, hidden_size=arch.hidden_size, eps=1e-5)
    assert norm.weight.shape == (arch.hidden_size,)
    assert config.bias_activation_fusion and not config.use_cpu_initialization  # the CUDA path, not the CPU one
    softmax = FusedScaleMaskSoftmax(input_in_fp16=False, input_in_bf16=True, attn_mask_type=AttnMaskType.causal,
                                    scaled_masked_softmax_fusion=config.masked_softmax_fusion,
                                    mask_func=lambda x, m: x, softmax_in_fp32=True, scale=None)
    if importlib.util.find_spec("scaled_masked_softmax_cuda") is None:
        assert not softmax.is_kernel_available(None, 2, 4, 256, 256)  # would import the missing extension
