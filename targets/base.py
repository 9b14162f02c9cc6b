"""What every target adapter provides: facts about itself, and running one runner job."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from harness.runner.protocol import RunnerConfig


class TargetError(Exception):
    """A target cannot be used; the message names the target and what to do."""


@dataclass(frozen=True)
class TargetConfig:
    """One inventory entry. Kind-specific fields (host, port, ...) live in `settings`."""

    name: str  # the --target value and the `target` column
    kind: str  # local | cuda | ssh
    profile: str = "generic-linux"  # which sensors exist (see harness.vocabulary.PROFILES)
    threads: Optional[int] = None  # default: the target's physical core count
    python: Optional[str] = None  # interpreter that runs the runner (default: this one, for local)
    case_timeout_s: float = 600.0  # a runner still running after this is killed and the case is `error`
    settings: Mapping[str, Any] = field(default_factory=dict)  # kind-specific fields


@dataclass(frozen=True)
class TargetInfo:
    """What recipes, reports and the runner config need to know about a target."""

    name: str
    kind: str
    profile: str
    threads: int
    arch: str  # e.g. x86_64, aarch64
    device: str  # CPU model or GPU name
    host: str
    facts: Mapping[str, Any] = field(default_factory=dict)  # anything else worth recording


@dataclass(frozen=True)
class RunnerJob:
    case_id: str
    artifact_dir: Path  # host path of the artifact directory (model file + manifest)
    model_file: str  # file name inside artifact_dir
    manifest: Mapping[str, Any]
    inputs_file: Path  # host .npz with the evaluation inputs by name
    config: Union[RunnerConfig, Mapping[str, Any]]  # framework, threads, batch size, timing, options (a dict is read as one)
    work_dir: Path  # host directory for this case's files (config, result, outputs, logs)


@dataclass
class RunnerOutcome:
    result: dict  # the runner's result.json read through RunnerResult, as a dict (status, reason, latencies_ms, ...)
    outputs: Optional[dict[str, np.ndarray]]  # evaluation outputs by name, None on error
    log: str = ""  # runner stdout/stderr, for the run's log


class Target(abc.ABC):
    def __init__(self, config: TargetConfig, cache_dir: Path) -> None:
        self.config = config
        self.cache_dir = Path(cache_dir)

    @abc.abstractmethod
    def info(self) -> TargetInfo:
        """Facts about the target (may connect to it)."""

    @abc.abstractmethod
    def run(self, job: RunnerJob, progress: Callable[[str], None] = lambda m: None) -> RunnerOutcome:
        """Run the runner on the target for one case and bring the result back."""

    def ready(self, progress: Callable[[str], None] = lambda m: None, quick: bool = False) -> None:
        """Raise TargetError when the target cannot take a case now (a device that stopped
        answering and does not come back; `quick`: after one attempt). Called before a case
        on a leased board of a fleet, and after a case that failed there."""

    def close(self) -> None:
        """Release connections; called once at the end of the session."""

    def outage_report(self) -> list[dict]:
        """Each time the target stopped answering during the session (remote kinds): since/until
        (UTC; until None = still away at the end), away_s, cases_failed."""
        return []
