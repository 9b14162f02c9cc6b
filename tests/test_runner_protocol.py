"""The runner's files: config.json (RunnerConfig) and result.json (RunnerResult), with a format version."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.runner.protocol import FORMAT_VERSION, FormatError, RunnerConfig, RunnerResult
from harness.runner_bundle import stage_runner
from targets.base import RunnerJob
from targets.local import collect, runner_env

# The keys a host wrote before the format had a version (local target; ssh adds target, runner_parent).
V0_CONFIG_KEYS = ["framework", "threads", "batch_size", "warmup_runs", "warmup_s", "min_runs", "min_duration_s",
                  "max_duration_s", "budget_s", "evaluate", "options", "artifact_format", "sensors",
                  "artifact", "manifest", "inputs", "outputs", "result"]
V0_RESULT = {  # an ok result.json as the runner wrote it before the version field
    "status": "ok", "reason": "", "init_ms": 3.5, "first_ms": 0.4, "warmup_runs": 10, "threads": 1, "batch_size": 1,
    "runtime": "onnxruntime", "runtime_version": "1.19.2", "runtime_details": {"providers": ["CPUExecutionProvider"]},
    "nonfinite_outputs": {}, "n_eval": 8, "evaluation_skipped": "", "timed_batch_note": "",
    "latencies_ms": [0.1, 0.2, 0.15], "n_runs": 3, "duration_s": 0.01, "valid": True,
    "power": {"power_source": "none: no sensor"}, "peak_rss_mb": 120.5,
    "system": {"host": "pi"}, "pid": 42, "wall_s": 1.5, "imported_modules": ["numpy", "runner"], "phases_s": {"load": 0.1},
}


def full_config(work: Path) -> RunnerConfig:
    return RunnerConfig(framework="onnxruntime", threads=1, batch_size=4, warmup_runs=2, warmup_s=0.0, min_runs=10,
                        min_duration_s=0.05, max_duration_s=2.0, budget_s=60.0, evaluate=True, options={},
                        artifact_format="onnx (opset 17)", sensors={"profile": "generic-linux", "idle_s": 0.1},
                        artifact=str(work / "model.onnx"), manifest={"file": "model.onnx"}, inputs=str(work / "inputs.npz"),
                        outputs=str(work / "outputs.npz"), result=str(work / "result.json"))


def test_config_round_trips_through_json(tmp_path):
    config = full_config(tmp_path)
    text = config.to_json()
    assert RunnerConfig.from_json(text) == config
    data = json.loads(text)
    # the keys of before, in their order, behind the version; target and runner_parent only when set
    assert list(data) == ["format_version"] + V0_CONFIG_KEYS and data["format_version"] == FORMAT_VERSION
    remote = replace(config, target="pi", runner_parent="/w/runner")
    assert list(remote.to_dict())[-2:] == ["target", "runner_parent"]
    assert RunnerConfig.from_dict(remote.to_dict()) == remote


def test_config_without_a_version_and_unknown_keys_reads():
    data = {"framework": "tflite", "threads": 2, "batch_size": 1, "min_runs": 5, "min_duration_s": 0.0,
            "max_duration_s": 1.0, "a_later_key": [1, 2]}
    config = RunnerConfig.from_dict(data)
    assert config.framework == "tflite" and config.warmup_runs == 10 and config.evaluate is True
    assert config.missing() == ["artifact", "inputs", "outputs", "result"]
    assert config.to_dict()["a_later_key"] == [1, 2]  # kept as it came
    assert RunnerConfig.of(data) == config and RunnerConfig.of(config) is config


def test_a_newer_config_is_refused_naming_both_versions():
    with pytest.raises(FormatError, match=f"format version {FORMAT_VERSION + 1}.*format version {FORMAT_VERSION}"):
        RunnerConfig.from_dict({"format_version": FORMAT_VERSION + 1, "framework": "onnxruntime"})


def test_runner_given_a_newer_config_writes_a_failed_result(tmp_path):
    config = full_config(tmp_path).to_dict()
    config["format_version"] = FORMAT_VERSION + 1
    config["a_key_from_the_future"] = True
    (tmp_path / "config.json").write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, "-m", "runner", str(tmp_path / "config.json")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=runner_env(stage_runner(tmp_path / "runner")))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "error"
    assert f"format version {FORMAT_VERSION + 1}" in result["reason"], result["reason"]
    assert f"(format version {FORMAT_VERSION})" in result["reason"], result["reason"]
    assert result["format_version"] == FORMAT_VERSION and result["system"]["host"]
    assert set(result) == {"format_version", "status", "reason", "system", "pid", "wall_s", "imported_modules", "phases_s"}


def test_result_from_before_the_version_field_reads(tmp_path):
    result = RunnerResult.from_dict(V0_RESULT)
    assert result.ok and result.latencies_ms == [0.1, 0.2, 0.15] and result.extra == {}
    assert result.to_dict() == {"format_version": FORMAT_VERSION, **V0_RESULT}
    failed = {"status": "error", "reason": "boom", "system": {"host": "pi"}, "pid": 1, "wall_s": 0.1,
              "imported_modules": [], "phases_s": {}}
    assert RunnerResult.from_dict(failed).to_dict() == {"format_version": FORMAT_VERSION, **failed}

    # and through the host's reader
    work = tmp_path / "work"
    work.mkdir()
    (work / "result.json").write_text(json.dumps(V0_RESULT))
    np.savez(work / "outputs.npz", output=np.zeros((8, 2), np.float32))
    job = RunnerJob("case", tmp_path, "model.onnx", {}, tmp_path / "inputs.npz", {}, work)
    outcome = collect(job, "log")
    assert outcome.result["status"] == "ok" and outcome.result["latencies_ms"] == V0_RESULT["latencies_ms"]
    assert outcome.outputs["output"].shape == (8, 2)


def test_host_refuses_a_newer_result(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({**V0_RESULT, "format_version": FORMAT_VERSION + 1}))
    outcome = collect(RunnerJob("case", tmp_path, "m", {}, tmp_path / "i.npz", {}, tmp_path), "")
    assert outcome.result["status"] == "error" and outcome.outputs is None
    assert f"format version {FORMAT_VERSION + 1}" in outcome.result["reason"]
    assert f"(format version {FORMAT_VERSION})" in outcome.result["reason"]


def test_local_target_writes_a_typed_config_and_reads_the_result(tmp_path):
    from targets.base import TargetConfig
    from targets.local import LocalTarget
    from tests.runner_job import logreg

    model, inputs = logreg(tmp_path / "model")
    config = RunnerConfig(framework="onnxruntime", threads=1, batch_size=4, warmup_runs=2, warmup_s=0.0, min_runs=10,
                          min_duration_s=0.0, max_duration_s=1.0, sensors={"profile": "generic-linux", "idle_s": 0.0})
    job = RunnerJob("logreg", model.parent, model.name, {}, inputs, config, tmp_path / "work")
    outcome = LocalTarget(TargetConfig("here", "local"), tmp_path / "cache").run(job)
    assert outcome.result["status"] == "ok", outcome.result["reason"]
    assert outcome.result["format_version"] == FORMAT_VERSION and len(outcome.result["latencies_ms"]) >= 10
    sent = json.loads((tmp_path / "work" / "config.json").read_text())
    assert list(sent) == ["format_version"] + V0_CONFIG_KEYS and sent["inputs"] == str(inputs)
    written = json.loads((tmp_path / "work" / "result.json").read_text())
    assert list(written) == ["format_version"] + list(V0_RESULT)  # the keys (and order) of before, behind the version
