"""The ssh target: the runner on a remote device (Raspberry Pi, Jetson, any Linux box).

Per case: ship the runner, the artifact and the evaluation inputs into the device's
content-addressed cache (only what is not there yet), write the case's config into a job
directory, run `python -m runner config.json` there in its own process group, and bring
back result.json and outputs.npz. The timing loop runs on the device; nothing that crosses
the network is inside a timed region.

Faults: a connection lost during a case makes that case `error` and the next case
reconnects (with backoff, for up to `reconnect_window_s`), first killing the orphaned runner; a
runner past the case timeout is killed on the device; a device that stays silent for the whole
window counts as gone: each remaining case then tries one quick connect and fails at once with
the same reason, or runs if the device answers again. `outage_report()` says how long it was away.

Remote layout under `workdir`: cache/<hash>/ (bundles), jobs/<session>-<n>/ (one per case,
removed when the case ends), and .quantbench-workdir (marks the directory as ours, for
`quantbench targets clean`).
"""
from __future__ import annotations

import json
import secrets
import shlex
import stat
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from harness.runner.protocol import FormatError, RunnerConfig
from harness.runner_bundle import runner_files
from targets.base import RunnerJob, RunnerOutcome, Target, TargetConfig, TargetError, TargetInfo
from targets.cuda import gpu_options, on_gpu
from targets.local import SCRUBBED_ENV, collect, failed, read_result
from targets.remote_cache import RemoteCache, Shipped, directory_files
from targets.ssh_config import parse_ssh_settings
from targets.ssh_errors import ConnectionLost, Unreachable

DEFAULT_PYTHON = "python3"
MARKER = ".quantbench-workdir"
q = shlex.quote


class DeviceGone(Exception):
    """The device stopped answering for the whole reconnect window; each remaining case tries once more."""


@dataclass
class Outage:
    """One stretch of time during which the device did not answer."""

    since: float  # time.time() when the loss was noticed
    until: Optional[float] = None  # when it answered again (None: not yet)
    cases_failed: int = 0  # cases that failed because of it (the one in flight, and those run while it was gone)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def python_command(cwd: str, runner_parent: str, python: str, args: str, record_pid: bool = False) -> str:
    """The shell line that runs `python ARGS` in `cwd` with the staged runner importable and
    without the variables that would change a measurement. With record_pid, its pid (which
    is its process group: sshd starts every command in a new session) goes to `cwd/pid`."""
    unset = " ".join(f"-u {name}" for name in SCRUBBED_ENV)
    return (f"cd {q(cwd)} && {'echo $$ > pid && ' if record_pid else ''}exec env {unset} PYTHONPATH={q(runner_parent)} "
            f"PYTHONDONTWRITEBYTECODE=1 {q(python)} {args}")


def kill_command(job_dir: str) -> str:
    """Kill the runner's process group (and so its children: tegrastats, a meter) if it still runs."""
    pid_file = q(f"{job_dir}/pid")
    return f"pid=$(cat {pid_file} 2>/dev/null) && kill -s KILL -- -\"$pid\" 2>/dev/null; true"


class SshTarget(Target):
    def __init__(self, config: TargetConfig, cache_dir: Path) -> None:
        super().__init__(config, cache_dir)
        self.settings = parse_ssh_settings(config.settings, f"target {config.name}")
        try:  # paramiko comes with the `remote` extra; only ssh targets need it
            from targets.ssh_connection import SshConnection
        except ImportError as exc:
            raise TargetError(f"target {config.name}: ssh targets need paramiko ({exc}); install it with "
                              f"`pip install 'quantbench[remote]'`") from None
        self.conn = SshConnection(config.name, self.settings)
        self.python = config.python or DEFAULT_PYTHON
        self.workdir = ""  # absolute, once connected
        self.cache: Optional[RemoteCache] = None
        self.gone = ""  # why the device counts as gone (each later case still tries one quick connect)
        self.outages: list[Outage] = []
        self._lost_job = ""  # job directory of a case cut off by a lost connection
        self._session = secrets.token_hex(4)
        self._jobs = 0
        self._info: Optional[TargetInfo] = None
        self.shipped_files = self.shipped_bytes = 0  # over the whole session
        self._uploads: list[str] = []  # what was sent since the last case's log line

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> None:
        self.conn.connect()
        workdir = self.settings.workdir
        if workdir == "~" or workdir.startswith("~/"):
            workdir = self.conn.home.rstrip("/") + workdir[1:]
        elif not workdir.startswith("/"):
            workdir = f"{self.conn.home.rstrip('/')}/{workdir}"
        self.workdir = workdir.rstrip("/") or "/"
        w = q(self.workdir)
        # A directory that already holds other things is not taken over (`targets clean` empties ours).
        status, output = self.conn.run(
            f"if [ -d {w} ] && [ ! -e {w}/{MARKER} ] && [ -n \"$(ls -A {w})\" ]; then exit 3; fi; "
            f"mkdir -p -- {w}/cache {w}/jobs && touch -- {w}/{MARKER}")
        if status == 3:
            raise TargetError(f"target {self.config.name}: workdir {self.workdir} on {self.conn.endpoint} already holds other "
                              f"files and is not a quantbench work directory (no {MARKER}); set `workdir` to a new or empty directory")
        if status != 0:
            raise TargetError(f"target {self.config.name}: cannot prepare workdir {self.workdir} on {self.conn.endpoint}: {output.strip()[-300:]}")
        self.cache = RemoteCache(self.conn, f"{self.workdir}/cache")

    def connect(self) -> None:
        """First connection: one attempt, and a TargetError that says what to check."""
        if self.conn.connected:
            return
        try:
            self._connect()
        except Unreachable as exc:
            raise TargetError(f"target {self.config.name}: {exc}. Is the device on and reachable? "
                              f"(try `ssh -p {self.conn.endpoint.port} {self.conn.endpoint.user}@{self.conn.endpoint.hostname}`)") from None
        except ConnectionLost as exc:
            raise TargetError(f"target {self.config.name}: the connection to {self.conn} broke while setting up: {exc}") from None

    def _reconnect(self, progress: Callable[[str], None], quick: bool = False) -> None:
        """After a loss: attempts with backoff for `reconnect_window_s` (at least `retries` of them);
        then the device counts as gone. Once gone (`quick`), one attempt: a device that answers
        again is used again, one that does not fails the case at once."""
        started = time.monotonic()
        deadline = started + (0.0 if quick else self.settings.reconnect_window_s)
        minimum = 1 if quick else max(1, self.settings.retries)
        delay, errors, ready = self.settings.backoff_s, [], False
        while True:
            outage = self.outages[-1] if self.outages else None
            away = f", away {time.time() - outage.since:.0f} s" if outage else ""
            progress(f"reconnecting to {self.config.name} (attempt {len(errors) + 1}{away})")
            try:
                self._connect()
                ready = True
                break
            except (Unreachable, ConnectionLost) as exc:
                errors.append(str(exc))
            except TargetError as exc:  # e.g. the host key changed: retrying cannot help
                errors.append(str(exc))
                break
            wait = delay if len(errors) < minimum else min(delay, deadline - time.monotonic())
            if wait <= 0:
                break
            time.sleep(wait)
            delay = min(delay * 2, self.settings.max_backoff_s) if delay else self.settings.backoff_s
        if not ready:
            self.conn.close()
            if not self.gone:
                since = time.strftime("%H:%M:%S UTC", time.gmtime(self.outages[-1].since if self.outages else time.time()))
                self.gone = (f"the device stopped answering at {since} ({len(errors)} reconnect attempt(s) over "
                             f"{time.monotonic() - started:.0f} s; last: {errors[-1]}); each remaining case on "
                             f"{self.config.name} tries one quick connect first and runs if the device answers again")
            raise DeviceGone(self.gone)
        self.gone = ""
        if self.outages and self.outages[-1].until is None:
            self.outages[-1].until = time.time()
        if self._lost_job:  # the cut-off case's runner may still be running: it would skew this case's timing
            self.conn.run(f"{kill_command(self._lost_job)}; rm -rf -- {q(self._lost_job)}")
            self._lost_job = ""

    def _lost(self) -> None:
        """The link broke: start counting how long the device is away (once per outage)."""
        self.conn.close()
        if not self.outages or self.outages[-1].until is not None:
            self.outages.append(Outage(since=time.time()))

    def _ensure_connected(self, progress: Callable[[str], None]) -> None:
        if self.gone:
            self._reconnect(progress, quick=True)
        elif not self.conn.answering():  # a link that died quietly between cases looks connected until asked
            self._lost()
            self._reconnect(progress)

    def outage_report(self) -> list[dict]:
        """Each time the device was away: since/until (UTC, until None = still away at the end), seconds, failed cases."""
        now = time.time()
        return [{"since": _utc(o.since), "until": _utc(o.until) if o.until else None,
                 "away_s": round((o.until or now) - o.since, 1), "cases_failed": o.cases_failed} for o in self.outages]

    def ready(self, progress: Callable[[str], None] = lambda m: None, quick: bool = False) -> None:
        """Reconnect if the link dropped (killing a runner a lost connection left behind): for
        the reconnect window, or with `quick` one attempt (a pool has other boards to go on with).
        TargetError when the device does not come back."""
        try:
            if quick and (self.gone or not self.conn.answering()):
                if not self.gone:
                    self._lost()
                self._reconnect(progress, quick=True)
            else:
                self._ensure_connected(progress)
        except DeviceGone as exc:
            raise TargetError(f"target {self.config.name}: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    # -- facts -------------------------------------------------------------------------------
    def _ship(self, label: str, files: dict) -> Shipped:
        shipped = self.cache.ensure(files)
        self.shipped_files += shipped.files
        self.shipped_bytes += shipped.bytes
        if shipped.files:
            self._uploads.append(f"{label} ({shipped.files} file(s), {shipped.bytes} bytes)")
        return shipped

    def _runner_parent(self) -> str:
        return self._ship("runner", {f"runner/{p.name}": p for p in runner_files()}).remote_dir

    def facts(self) -> dict:
        """What `quantbench targets check` prints: runs runner.facts on the device."""
        self.connect()
        try:
            parent = self._runner_parent()
            sensing = json.dumps(dict(self.config.settings.get("sensors", {})))
            args = f"-m runner.facts --workdir {q(self.workdir)} --profile {q(self.config.profile)} --settings {q(sensing)}"
            if on_gpu(self.config.kind, self.config.profile):  # facts["gpu"]: the torch GPU recipes read it
                gpu = self.config.settings.get("gpu", 0)
                args += f" --gpu {int(gpu) if isinstance(gpu, int) else 0}"
            status, output = self.conn.run(python_command(self.workdir, parent, self.python, args))
        except ConnectionLost as exc:
            raise TargetError(f"target {self.config.name}: the connection to {self.conn} broke: {exc}") from None
        if status != 0:
            raise TargetError(f"target {self.config.name}: `{self.python} -m runner.facts` failed on {self.conn.endpoint} "
                              f"(exit {status}): {output.strip()[-400:]}. Is `python` in the inventory a Python 3.8+ "
                              f"interpreter that exists on the device?")
        try:
            return json.loads(output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise TargetError(f"target {self.config.name}: runner.facts printed no JSON: {output.strip()[-400:]}") from None

    def info(self) -> TargetInfo:
        if self._info is None:
            facts = self.facts()
            self._info = TargetInfo(
                name=self.config.name,
                kind=self.config.kind,
                profile=self.config.profile,
                threads=self.config.threads or int(facts.get("physical_cores") or 1),
                arch=facts.get("machine", ""),
                device=facts.get("device_model") or facts.get("cpu_model", ""),
                host=facts.get("host", self.conn.endpoint.hostname),
                facts={**facts, "ssh": str(self.conn), "workdir": self.workdir},
            )
        return self._info

    # -- one case ------------------------------------------------------------------------------
    def _failed(self, reason: str, log: str = "") -> RunnerOutcome:
        return failed(reason, log)

    def run(self, job: RunnerJob, progress: Callable[[str], None] = lambda m: None) -> RunnerOutcome:
        job.work_dir.mkdir(parents=True, exist_ok=True)
        (job.work_dir / "result.json").unlink(missing_ok=True)
        (job.work_dir / "outputs.npz").unlink(missing_ok=True)
        remote_job = ""
        log = []
        try:
            self._ensure_connected(progress)
            progress(f"shipping to {self.config.name}")
            remote_job, config = self._stage(job, log)
            progress(f"running on {self.config.name} ({self.conn.endpoint.hostname})")
            output, timed_out = self._execute(remote_job, config, progress)
            log.append(output)
            if timed_out:
                return collect(job, "".join(log), timed_out_after=self.config.case_timeout_s)
            self._fetch(remote_job, job)
            self.conn.remove_tree(remote_job)
            return collect(job, "".join(log))
        except DeviceGone as exc:
            if self.outages:
                self.outages[-1].cases_failed += 1
            return self._failed(str(exc), "".join(log))
        except ConnectionLost as exc:
            self._lost_job = remote_job
            self._lost()
            self.outages[-1].cases_failed += 1
            return self._failed(f"lost the connection to {self.conn} during the case ({exc}); the next case reconnects",
                                "".join(log))
        except TargetError as exc:
            return self._failed(str(exc), "".join(log))
        except BaseException:  # Ctrl-C or SIGTERM on the host: end the runner on the device, then stop
            if remote_job:
                self._abort(remote_job)
            raise

    def _abort(self, remote_job: str) -> None:
        """Kill a case's runner process group on the device (interrupted run); if the link is
        down, the next reconnect of this session does it."""
        try:
            self.conn.run(f"{kill_command(remote_job)}; rm -rf -- {q(remote_job)}", timeout_s=self.settings.connect_timeout_s)
        except Exception:  # noqa: BLE001 - a dead link must not hide the interrupt itself
            self._lost_job = remote_job

    def _stage(self, job: RunnerJob, log: list) -> tuple[str, RunnerConfig]:
        """Ship what the case needs and write its config; returns (remote job dir, config)."""
        bundles = {
            "runner": {f"runner/{p.name}": p for p in runner_files()},
            "artifact": directory_files(job.artifact_dir),
            "inputs": {job.inputs_file.name: job.inputs_file},
        }
        where = {label: self._ship(label, files).remote_dir for label, files in bundles.items()}
        sent, self._uploads = self._uploads, []
        log.append(f"[ssh {self.conn}] uploaded {', '.join(sent) if sent else 'nothing (everything was cached)'}\n")
        self._jobs += 1
        remote_job = f"{self.workdir}/jobs/{self._session}-{self._jobs}"
        config = RunnerConfig.of(job.config)
        if on_gpu(self.config.kind, self.config.profile):  # jetson-* / nvidia-gpu: the cuda target's GPU paths
            config = replace(config, options={**gpu_options(config.framework, self.config.settings),
                                              **dict(config.options or {})})
        config = replace(
            config,
            artifact=f"{where['artifact']}/{job.model_file}",
            manifest=dict(job.manifest),
            inputs=f"{where['inputs']}/{job.inputs_file.name}",
            outputs=f"{remote_job}/outputs.npz",
            result=f"{remote_job}/result.json",
            target=self.config.name,
            runner_parent=where["runner"],
        )
        text = config.to_json(indent=1)
        (job.work_dir / "config.json").write_text(text)  # the host keeps the exact config the device ran
        self.conn.mkdir(remote_job)
        self.conn.put_bytes(text.encode(), f"{remote_job}/config.json")
        return remote_job, config

    def _execute(self, remote_job: str, config: RunnerConfig, progress: Callable[[str], None]) -> tuple[str, bool]:
        """Run the runner; (its output, whether it was killed for the case timeout)."""
        channel = self.conn.start(python_command(remote_job, config.runner_parent, self.python, "-m runner config.json", record_pid=True))
        started = time.monotonic()
        deadline = started + self.config.case_timeout_s
        next_check = started + self.settings.keepalive_s
        chunks = []
        while True:
            with self.conn.guard("reading the runner's output"):
                while channel.recv_ready():
                    chunks.append(channel.recv(65536))
                if channel.exit_status_ready() and not channel.recv_ready():
                    break
            now = time.monotonic()
            if not self.conn.connected:
                raise ConnectionLost("the connection closed while the runner was running")
            if now > deadline:
                self.conn.run(kill_command(remote_job) + f"; rm -rf -- {q(remote_job)}")
                channel.close()
                return (b"".join(chunks).decode(errors="replace")
                        + f"\n[ssh] runner killed on the device after {self.config.case_timeout_s:g} s\n"), True
            if now > next_check:  # a silent device looks exactly like a long case: ask it
                if not self.conn.answering():
                    raise ConnectionLost(f"the device did not answer within {self.settings.connect_timeout_s:g} s")
                next_check = now + self.settings.keepalive_s
            channel.status_event.wait(0.05)
        channel.close()
        return b"".join(chunks).decode(errors="replace"), False

    def _fetch(self, remote_job: str, job: RunnerJob) -> None:
        """Bring back result.json, and outputs.npz when the runner succeeded."""
        try:
            self.conn.get(f"{remote_job}/result.json", str(job.work_dir / "result.json"))
        except FileNotFoundError:
            return  # collect() reports the runner's death with its last output lines
        try:
            ok = read_result(job.work_dir / "result.json").ok
        except FormatError:
            return  # collect() says which format versions met
        if ok:
            self.conn.get(f"{remote_job}/outputs.npz", str(job.work_dir / "outputs.npz"))

    # -- maintenance ---------------------------------------------------------------------------
    def clean(self) -> tuple[int, int]:
        """Empty the device's cache and job directories: (files, bytes) removed."""
        self.connect()
        if not self.conn.exists(f"{self.workdir}/{MARKER}"):
            raise TargetError(f"target {self.config.name}: {self.workdir} has no {MARKER}, so it is not a quantbench work "
                              f"directory; nothing removed")
        dirs = [f"{self.workdir}/{d}" for d in ("cache", "jobs")]
        files = size = 0
        for top in dirs:
            for _, entry in self.conn.walk(top):
                if not stat.S_ISDIR(entry.st_mode):
                    files, size = files + 1, size + entry.st_size
        quoted = " ".join(q(d) for d in dirs)
        self.conn.check(f"rm -rf -- {quoted} && mkdir -p -- {quoted}", f"cleaning {self.workdir}")
        return files, size
