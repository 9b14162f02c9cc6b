"""The runner jobs of a session: where a case's rounds work, the runner config of a job
(`runner_config`, a RunnerConfig; `_job`), and running one on the board in use (a failed
runner is a `CaseFailure`).

A mixin of BenchSession: it reads the board in use (`target`, `target_config`, `target_info`,
`threads`), the run's options, store and evaluation inputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from harness import compat
from harness.pipeline import CaseFailure
from harness.runner.protocol import RunnerConfig
from harness.suite import Case, Timing
from harness.vocabulary import BASELINE_MODE, STATUS_OK
from targets import RunnerJob


def runner_backend(case: Case, artifact) -> str:
    """The runner backend of a case: its framework's, or the runtime its artifact names when
    the runner has a backend of that name (a torch recipe's .pte runs on "executorch")."""
    from harness.runner.__main__ import BACKENDS

    runtime = artifact.manifest.get("runtime")
    return runtime if runtime != case.framework and runtime in BACKENDS else case.framework


class RunnerJobs:
    def _work_dir(self, case: Case, r: int, baseline: bool = False) -> Path:
        # per board in a fleet: one fp32 case may run on several boards at once
        folder = self.store.dir / "work" / (self.board.name if self.fleet else "") / case.case_id
        return folder / f"baseline-round-{r}" if baseline else (folder if r == 0 else folder / f"round-{r}")

    def _run_job(self, case: Case, artifact, timing: Timing, work_dir: Path, evaluate: bool = True):
        outcome = self.target.run(self._job(case, artifact, timing, work_dir, evaluate), self.progress)
        if outcome.log.strip():
            self.store.log(f"[{case.case_id}] runner output ({work_dir.name}):\n{outcome.log.rstrip()}")
        if outcome.result.get("status") != STATUS_OK:
            reason = outcome.result.get("reason") or "failed without a reason"
            raise CaseFailure(f"runner on {self.target_info.name}: {reason}")
        return outcome

    def runner_config(self, case: Case, artifact, timing: Timing, evaluate: bool = True) -> RunnerConfig:
        """What the runner is told for this case on the board in use (the target adds the
        paths on the device). Public: benchmarks time extra runner processes with it."""
        sensing = dict(self.target_config.settings.get("sensors", {}))  # the inventory's [targets.X.sensors]
        return RunnerConfig(
            framework=runner_backend(case, artifact),
            threads=self.threads,
            batch_size=case.batch_size,
            warmup_runs=timing.warmup_runs,
            warmup_s=timing.warmup_s,
            min_runs=timing.min_runs,
            min_duration_s=timing.min_duration_s,
            max_duration_s=timing.max_duration_s,
            # fp32 is the reference every other case of its framework is scored against: only the
            # target's case timeout bounds it.
            budget_s=(self.target_config.case_timeout_s if case.mode == BASELINE_MODE
                      else self.options.budget_s(self.target_config.case_timeout_s)),
            evaluate=evaluate,
            options={},
            artifact_format=compat.describe(artifact.path, artifact.manifest),  # for load errors on the device
            sensors={"profile": self.target_info.profile, "root": sensing.get("root", "/"),
                     "idle_s": sensing.get("idle_s", 1.0), "settings": sensing},
        )

    def _job(self, case: Case, artifact, timing: Timing, work_dir: Optional[Path] = None,
             evaluate: bool = True) -> RunnerJob:
        return RunnerJob(case.case_id, artifact.path, artifact.manifest["file"], artifact.manifest,
                         self._inputs_file(case), self.runner_config(case, artifact, timing, evaluate),
                         work_dir or self._work_dir(case, 0))
