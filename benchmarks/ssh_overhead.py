"""What does running a case over SSH cost, and does the network stay out of the timed region?

One artifact (digits-cnn onnxruntime fp32 and static-int8), the same runner job, alternated
between the local target and an ssh target on a real sshd on loopback (the "device" is this
machine, so any difference is the harness's own). Per target and mode: median wall time of a
case (host side: ship + run + fetch) and the runner's p50 latency. Goals: ssh p50 / local p50
within 0.97-1.03 (nothing remote is timed); warm ssh overhead per case under 1 s on loopback;
the first ssh case ships the bundles, every later case uploads 0 bytes.

    .venv/bin/python benchmarks/ssh_overhead.py [--rounds 5] [--seconds 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.artifacts import ArtifactCache
from harness.models import digits_cnn
from harness.quantize import RECIPES, BuildContext
from harness.runner.protocol import RunnerConfig
from harness import settings
from harness.testing.sshd import make_sshd  # a real sshd on 127.0.0.1 with generated keys
from targets import RunnerJob, open_target
from targets.inventory import parse_target


def job(artifact, inputs: Path, seconds: float, work: Path) -> RunnerJob:
    config = RunnerConfig(framework="onnxruntime", threads=1, batch_size=1, warmup_runs=50, warmup_s=0.2,
                          min_runs=100, min_duration_s=seconds, max_duration_s=seconds * 3)
    return RunnerJob("bench", artifact.path, artifact.manifest["file"], artifact.manifest, inputs, config, work)


def one_case(target, the_job) -> tuple[float, float]:
    started = time.perf_counter()
    outcome = target.run(the_job)
    wall = time.perf_counter() - started
    if outcome.result["status"] != "ok":
        raise SystemExit(f"{target.config.name}: runner failed: {outcome.result['reason']}")
    return wall, statistics.median(outcome.result["latencies_ms"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed window per case")
    args = parser.parse_args()

    dataset = digits_cnn.data()
    cache = ArtifactCache(settings.cache_dir() / "artifacts")
    ctx = BuildContext(digits_cnn, dataset, cache, settings.cache_dir() / "models")
    recipes = [r for r in RECIPES["onnxruntime"] if r.mode in ("fp32", "static-int8")][:2]
    artifacts = {r.mode: ctx.artifact(r)[0] for r in recipes}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = tmp / "inputs.npz"
        np.savez(inputs, **dataset.eval_inputs)
        sshd = make_sshd(tmp / "sshd")
        try:
            local = open_target(parse_target("local", {"kind": "local"}, "bench"), settings.cache_dir())
            remote = open_target(parse_target("loopback", sshd.target(python=sys.executable, workdir=str(tmp / "device")), "bench"),
                                 settings.cache_dir())
            started = time.perf_counter()
            remote.info()
            connect_s = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(5):
                remote.conn.run("true")
            shell_s = (time.perf_counter() - started) / 5  # the device user's shell start-up (.bashrc) is in every case
            figures = {(t, m): {"wall": [], "p50": []} for t in ("local", "ssh") for m in artifacts}
            shipped_by_round = []
            for rnd in range(args.rounds + 1):  # round 0 warms up (and ships everything to the device)
                before = remote.shipped_bytes
                for mode, artifact in artifacts.items():
                    for name, target in (("local", local), ("ssh", remote)) if rnd % 2 else (("ssh", remote), ("local", local)):
                        wall, p50 = one_case(target, job(artifact, inputs, args.seconds, tmp / name / mode / str(rnd)))
                        if rnd:
                            figures[(name, mode)]["wall"].append(wall)
                            figures[(name, mode)]["p50"].append(p50)
                shipped_by_round.append(remote.shipped_bytes - before)
            remote.close()
        finally:
            sshd.stop()

    print(f"ssh connect + runner upload + device facts: {connect_s:.2f} s (once per session)")
    print(f"one remote shell command (`true`): {shell_s:.3f} s; a case runs one (the runner), the rest is SFTP")
    print(f"bytes uploaded per round (round 0 first): {shipped_by_round}")
    print(f"{'mode':<12} {'local wall s':>12} {'ssh wall s':>10} {'overhead s':>10} {'local p50 ms':>12} {'ssh p50 ms':>10} {'ratio':>6}")
    for mode in artifacts:
        lw, sw = (statistics.median(figures[(t, mode)]["wall"]) for t in ("local", "ssh"))
        lp, sp = (statistics.median(figures[(t, mode)]["p50"]) for t in ("local", "ssh"))
        print(f"{mode:<12} {lw:>12.3f} {sw:>10.3f} {sw - lw:>10.3f} {lp:>12.4f} {sp:>10.4f} {sp / lp:>6.3f}")
    print("goals: ratio 0.97-1.03; overhead < 1 s per case on loopback; 0 bytes uploaded after round 0")


if __name__ == "__main__":
    main()
