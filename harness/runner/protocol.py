"""The runner's two files: config.json in (RunnerConfig, written by the host) and result.json
out (RunnerResult, written by the runner). Each is one JSON object that carries `format_version`.

The version rule (as pyperf's _JSON_VERSION): a reader accepts every version up to its own
FORMAT_VERSION and refuses a newer one, saying which two versions met; a file without the key
is version 0. Bump FORMAT_VERSION whenever a key is added, removed or changes meaning, and note
here what the new version changed:
  0: (no `format_version` key) the config and result objects as written before they had a version.
  1: both files carry `format_version`; every other key is as in version 0.

A key this code does not know is kept (in `extra`) and written back unchanged, so reading and
writing a file loses nothing. Python 3.8+ and the standard library only: this file ships with
the runner.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional

FORMAT_VERSION = 1


class FormatError(ValueError):
    """A file this code cannot read: not a JSON object, or a newer format version than its own."""


def format_version(data: Mapping[str, Any], what: str, reader: str) -> int:
    """The file's format version (0 when it has none); FormatError when this code cannot read it.
    `what` names the file, `reader` who reads it ("this runner", "this host")."""
    version = data.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise FormatError(f"{what} has format_version {version!r}, not a whole number >= 0")
    if version > FORMAT_VERSION:
        raise FormatError(f"{what} has format version {version}, newer than {reader} reads "
                          f"(format version {FORMAT_VERSION}): the host and the runner come from different "
                          f"quantbench versions; run both from the same one")
    return version


def _split(cls, data: Mapping[str, Any], what: str, reader: str) -> Dict[str, Any]:
    if not isinstance(data, Mapping):
        raise FormatError(f"{what} is not a JSON object but {type(data).__name__}")
    format_version(data, what, reader)
    known = {f.name for f in fields(cls)} - {"extra"}
    values = {k: v for k, v in data.items() if k in known}
    values["extra"] = {k: v for k, v in data.items() if k not in known and k != "format_version"}
    return values


def _to_dict(obj, keep_none) -> Dict[str, Any]:
    """format_version first, then the fields in their order (None only where `keep_none` says),
    then the keys this code did not know."""
    out: Dict[str, Any] = {"format_version": FORMAT_VERSION}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name != "extra" and (value is not None or keep_none(f.name)):
            out[f.name] = value
    out.update(obj.extra)
    return out


@dataclass(frozen=True)
class RunnerConfig:
    """config.json: what the runner measures and how. The session fills the measurement
    settings; the target adds the paths on the device when it stages the job."""

    framework: Optional[str] = None  # onnxruntime | torch | tflite: which backend runs the artifact
    threads: Optional[int] = None  # intra-op threads the runtime is given
    batch_size: Optional[int] = None  # samples per call, timed and evaluated alike
    warmup_runs: int = 10  # untimed calls before the timed loop (at least this many...)
    warmup_s: float = 0.2  # ...and at least this long, never past max_duration_s
    min_runs: Optional[int] = None  # the timed loop runs at least this many calls...
    min_duration_s: Optional[float] = None  # ...and at least this long (else the row is not `valid`)...
    max_duration_s: Optional[float] = None  # ...but stops after this long
    budget_s: Optional[float] = None  # seconds the case may take: the evaluation pass is skipped past it
    evaluate: bool = True  # false: no evaluation pass (a later round whose outputs another process scored)
    options: Dict[str, Any] = field(default_factory=dict)  # backend options (providers, io, ...)
    artifact_format: Optional[str] = None  # what wrote the artifact, for load errors on the device
    sensors: Dict[str, Any] = field(default_factory=dict)  # profile, root, idle_s, settings (the inventory's)
    # set by the target when it stages the job (paths as the device sees them)
    artifact: Optional[str] = None  # the model file
    manifest: Dict[str, Any] = field(default_factory=dict)  # the artifact's manifest
    inputs: Optional[str] = None  # .npz of the evaluation inputs by name
    outputs: Optional[str] = None  # where the runner writes the evaluation outputs (.npz)
    result: Optional[str] = None  # where the runner writes result.json
    target: Optional[str] = None  # the target's name, for messages (remote targets)
    runner_parent: Optional[str] = None  # the directory holding runner/ on the device (ssh)
    extra: Dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they came

    REQUIRED = ("framework", "threads", "batch_size", "min_runs", "min_duration_s", "max_duration_s",
                "artifact", "inputs", "outputs", "result")
    OMITTED_WHEN_UNSET = ("target", "runner_parent")  # only some targets set them

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], what: str = "config.json", reader: str = "this runner") -> "RunnerConfig":
        return cls(**_split(cls, data, what, reader))

    @classmethod
    def from_json(cls, text: str, what: str = "config.json", reader: str = "this runner") -> "RunnerConfig":
        return cls.from_dict(json.loads(text), what, reader)

    @classmethod
    def of(cls, config) -> "RunnerConfig":
        """A RunnerConfig as it is, or one read from a dict (older callers pass dicts)."""
        return config if isinstance(config, cls) else cls.from_dict(config, "the job's config", "this host")

    def to_dict(self) -> Dict[str, Any]:
        return _to_dict(self, lambda name: name not in self.OMITTED_WHEN_UNSET)

    def to_json(self, indent: Optional[int] = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def missing(self) -> List[str]:
        """The keys the runner needs that this config lacks."""
        return [name for name in self.REQUIRED if getattr(self, name) is None]


@dataclass(frozen=True)
class RunnerResult:
    """result.json: what the runner measured, or why it failed. A failed result has only status,
    reason and the process facts (system ... phases_s); an ok one has every field."""

    status: str = "error"  # ok | error
    reason: str = ""  # why it failed ("" when ok)
    init_ms: Optional[float] = None  # loading the artifact
    first_ms: Optional[float] = None  # the first call
    warmup_runs: Optional[int] = None  # untimed calls made
    threads: Optional[int] = None
    batch_size: Optional[int] = None
    runtime: Optional[str] = None  # e.g. onnxruntime
    runtime_version: Optional[str] = None
    runtime_details: Optional[Dict[str, Any]] = None  # the backend's facts (providers, delegates, peak device memory, ...)
    nonfinite_outputs: Optional[Dict[str, int]] = None  # output name -> count of NaN/inf values (only outputs that have any)
    n_eval: Optional[int] = None  # evaluation samples run (0 when the pass was skipped)
    evaluation_skipped: Optional[str] = None  # why there was no evaluation pass ("" when there was one)
    timed_batch_note: Optional[str] = None  # set when the data cannot fill one batch and was repeated
    latencies_ms: Optional[List[float]] = None  # every timed call
    n_runs: Optional[int] = None
    duration_s: Optional[float] = None  # the timed loop
    valid: Optional[bool] = None  # the loop met its minimums (rather than hitting max_duration_s)
    power: Optional[Dict[str, Any]] = None  # power, energy and throttling facts of the window
    peak_rss_mb: Optional[float] = None  # the runner process's peak resident memory
    system: Optional[Dict[str, Any]] = None  # the device (host, CPU, Python, ...)
    pid: Optional[int] = None
    wall_s: Optional[float] = None  # the run, config read to result written
    imported_modules: Optional[List[str]] = None  # top-level modules the process imported
    phases_s: Optional[Dict[str, float]] = None  # seconds per phase of the process
    extra: Dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they came

    @classmethod
    def failed(cls, reason: str) -> "RunnerResult":
        return cls(status="error", reason=reason)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], what: str = "result.json", reader: str = "this host") -> "RunnerResult":
        return cls(**_split(cls, data, what, reader))

    @classmethod
    def from_json(cls, text: str, what: str = "result.json", reader: str = "this host") -> "RunnerResult":
        return cls.from_dict(json.loads(text), what, reader)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object: an ok result writes every field, a failed one only those it has."""
        return _to_dict(self, lambda name: self.ok)

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)
