"""A run's artifacts built before its first timed case, two builds at a time.

A cold run spends most of its time building (a model's training, export, quantization,
AOTInductor's C++ compiles), and each build uses about one core; the timing wants a quiet
machine. So a single-target session first walks the builds of every selected case (and of its
fp32 baseline) in the order of the run, and a second process, started at the first artifact
that is not in the cache, walks the same list from its end. Each claims a case before
building it (a file created with O_EXCL), so every build happens once; what builds share (a
model's training, a QAT fine-tune, a sensitivity search) are the cache's own locked builds.
When both are done the session times its cases one by one, on a machine with nothing else to
do, every artifact a cache hit. While both build, each runs torch at its share of the CPUs
(one thread each on two: CpuShare). The walk itself is unchanged: a build that failed here runs
again in the case's own walk and makes its row (the same n/a or error, with its traceback).

    session.build_ahead(cases, jobs=2)       # harness/pytest_plugin.py; --qb-build-jobs 1: off

The second process is `python -m harness.build_ahead PLAN.json` (PLAN: format 1, the case ids
with the suite files that declare them, the cache, the target's settings). It imports the
suite files as pytest would and builds what the plan names; its lines go to the run's log.
A second process that cannot start or fails costs nothing but the time: the first builds
whatever is left.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

PLAN_FORMAT = 1
CLAIMS = "claims"


class Claims:
    """Which builder took which case: one file per case id, created atomically by its taker."""

    def __init__(self, directory: Path, owner: str) -> None:
        self.directory = Path(directory)
        self.owner = owner

    def take(self, case_id: str) -> bool:
        try:
            fd = os.open(self.directory / case_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as file:
            file.write(self.owner)
        return True


def needed(cases: Sequence[Any], info: Any) -> list:
    """The cases whose artifacts a session builds, in its order: each case's fp32 baseline
    first, then the case; none without a recipe, n/a for its batch, or not applicable here."""
    from harness.baselines import fp32_of

    out: dict[str, Any] = {}
    for case in cases:
        for one in (fp32_of(case), case):
            if one is None or one.recipe is None or one.na_reason or one.case_id in out:
                continue
            if one.recipe.not_applicable_reason(one.model, info):
                continue
            out[one.case_id] = one
    return list(out.values())


def threads_each(jobs: int) -> int:
    """torch's intra-op threads per builder while `jobs` build at once: the CPUs shared out, at
    least one. (Two builders each running OpenMP on every core oversubscribe the machine, and a
    thread waiting at a barrier for a CPU the other builder holds stalls its whole build.)"""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


class CpuShare:
    """This builder's torch at its share of the CPUs while `jobs` build, from the first build
    after torch is imported (a build imports it) until restore()."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.before: Optional[int] = None

    def apply(self) -> None:
        torch = sys.modules.get("torch")
        if torch is None or self.jobs < 2:
            return
        if self.before is None:
            self.before = torch.get_num_threads()
        torch.set_num_threads(threads_each(self.jobs))

    def restore(self) -> None:
        if self.before is not None:
            sys.modules["torch"].set_num_threads(self.before)
            self.before = None


def _torch_threads() -> str:
    torch = sys.modules.get("torch")
    return "" if torch is None else f" (torch at {torch.get_num_threads()} thread(s))"


def build_case(models: Any, case: Any, settings: Any) -> tuple[Path, bool]:
    """Build (or find cached) the case's artifact, its float layers chosen first for a
    keep_float="auto" build: what the walk's build step does. (its path, built now)."""
    from harness.sensitivity import choose_before_build

    context = models.context(case, settings)
    choose_before_build(context, case.recipe)
    artifact, built = context.artifact(case.recipe)
    return artifact.path, built


def _walk(cases: Sequence[Any], claims: Claims, build: Callable[[Any], Any],
          log: Callable[[str], None]) -> int:
    """Build every case not claimed yet; returns how many this builder took."""
    from harness.quantize.base import NotApplicable

    taken = 0
    for case in cases:
        if not claims.take(case.case_id):
            continue
        taken += 1
        try:
            build(case)
        except BaseException as exc:  # noqa: BLE001 - the case's own walk builds it again and makes its row
            if isinstance(exc, NotApplicable):  # not a failure: the case's walk finds the same and says n/a
                log(f"[{case.case_id}] n/a here ({' '.join(str(exc).split())[:200]})")
                continue
            log(f"[{case.case_id}] build ahead failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                "the case's own walk builds it again")
            if not isinstance(exc, Exception):
                raise
    return taken


class SecondBuilder:
    """The second process: started once (at once on an empty cache, else at the first build that is not a cache hit)."""

    def __init__(self, plan: dict[str, Any], plan_path: Path, log_path: Path, echo: Callable[[str], None]) -> None:
        self.plan, self.plan_path, self.log_path = plan, plan_path, log_path
        self.echo = echo  # its progress lines, shown by this process (pytest captures a child's own stdout)
        self.process: Optional[subprocess.Popen] = None
        self._partial = b""

    def start(self) -> None:
        if self.process is not None:
            return
        self.plan_path.write_text(json.dumps(self.plan))
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(threads_each(2)))  # read when torch starts (CpuShare: the first builder)
        package_root = Path(__file__).resolve().parent.parent  # where `harness` imports from here
        if package_root.name not in ("site-packages", "dist-packages"):  # a checkout: first, as for this process
            env["PYTHONPATH"] = os.pathsep.join([str(package_root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        with open(self.log_path, "a") as log:  # its warnings and tracebacks: the run's log
            self.process = subprocess.Popen([sys.executable, "-m", "harness.build_ahead", str(self.plan_path)],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env)
        os.set_blocking(self.process.stdout.fileno(), False)

    def relay(self) -> None:
        """Show the progress lines it has written so far (read without blocking)."""
        if self.process is None:
            return
        chunks = []
        while True:
            try:
                chunk = os.read(self.process.stdout.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        *lines, self._partial = (self._partial + b"".join(chunks)).split(b"\n")
        for line in lines:
            if line.strip():
                self.echo(line.decode(errors="replace"))

    def wait(self) -> Optional[int]:
        if self.process is None:
            return None
        while self.process.poll() is None:
            self.relay()
            time.sleep(0.5)
        self.relay()
        self.process.stdout.close()
        return self.process.returncode

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: it ends like Ctrl-C (harness/interrupts.py), its partial build removed
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and not self.process.stdout.closed:
            self.process.stdout.close()


def _empty(directory: Path) -> bool:
    if not directory.is_dir():
        return True
    with os.scandir(directory) as entries:
        return not any(entries)


def build_ahead(session: Any, cases: Sequence[Any], jobs: int, suite_files: dict[str, str]) -> None:
    """Build the artifacts of `cases` (a single-target session's selection) before any is timed,
    with a second process when `jobs` >= 2; `suite_files`: case id -> the file declaring it."""
    import shutil
    import tempfile

    todo = needed(cases, session.target_info)
    if len(todo) < 2:
        return
    work = Path(tempfile.mkdtemp(prefix="build-ahead-", dir=session.store.dir))
    (work / CLAIMS).mkdir()
    claims = Claims(work / CLAIMS, "main")
    settings = dict(session.target_config.settings)
    second = None
    if jobs >= 2 and all(c.case_id in suite_files for c in todo):
        plan = {"format": PLAN_FORMAT, "cache_dir": str(Path(session.options.cache_dir).resolve()),
                "profile": session.options.profile, "settings": settings, "claims": str(work / CLAIMS),
                "log": str(session.store.log_path), "cwd": os.getcwd(),
                "cases": [{"case_id": c.case_id, "file": suite_files[c.case_id]} for c in todo]}
        second = SecondBuilder(plan, work / "plan.json", session.store.log_path, session.progress.echo)
    share = CpuShare(jobs if second is not None else 1)
    before = session.cache.on_build
    position = {c.case_id: i + 1 for i, c in enumerate(todo)}
    current: list = []  # the case this process is building ahead

    def building(key: str) -> None:  # a build that is not a cache hit: the second builder starts now
        if current:
            session.progress(f"building ahead ({position[current[0]]} of {len(todo)})")
        if second is not None:
            second.start()
        share.apply()  # torch is imported by now if this build uses it
        before(key)

    session.cache.on_build = building
    started = time.monotonic()
    if second is not None and _empty(Path(session.cache.root)):
        second.start()  # an empty cache: everything is to build, and the first build waits for a model's training

    def build(case: Any) -> None:
        if second is not None:
            second.relay()
        session.progress.start(case.case_id)
        current[:] = [case.case_id]
        try:
            path, built = build_case(session.models, case, settings)
            session.store.log(f"[{case.case_id}] artifact {path} ({'built' if built else 'cached'}) ahead of the timing")
        finally:
            current.clear()
            session.progress.finish()

    try:
        mine = _walk(todo, claims, build, session.store.log)
        if second is not None and second.process is not None:
            session.progress.start("build ahead")
            try:
                session.progress("waiting for the second builder")
                code = second.wait()
                if code:
                    session.progress(f"the second builder stopped with exit status {code} (see {session.store.log_path}); "
                                     "the cases' own walks build what it left")
            finally:
                session.progress.finish()
        other = len(todo) - mine
        session.store.log(f"build ahead: {len(todo)} artifacts in {time.monotonic() - started:.1f} s, "
                          f"{mine} by this process{_torch_threads()}, {other} by the second builder"
                          + ("" if second is None or second.process else " (not started: every build was cached)"))
    finally:
        session.cache.on_build = before
        share.restore()
        if second is not None:
            second.stop()
        shutil.rmtree(work, ignore_errors=True)


# -- the second builder's process ----------------------------------------------------------
def _suite_cases(files: Sequence[str]) -> dict[str, Any]:
    """Every case the suite files declare, by case id (imported as pytest's rootdir-relative
    `prepend` mode does: the file's directory first on sys.path)."""
    import importlib.util

    from harness.suite import Suite

    cases = {}
    for number, file in enumerate(dict.fromkeys(files)):
        directory = str(Path(file).parent)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        spec = importlib.util.spec_from_file_location(f"_quantbench_build_ahead_{number}_{Path(file).stem}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for value in vars(module).values():
            suite = getattr(value, "suite", None)
            if isinstance(suite, Suite):
                cases.update({c.case_id: c for c in suite.cases()})
    return cases


def main(argv: Sequence[str]) -> int:
    from harness.artifacts import ArtifactCache
    from harness.interrupts import raise_on_sigterm
    from harness.model_state import ModelState
    from harness.progress import Progress

    raise_on_sigterm()
    plan = json.loads(Path(argv[0]).read_text())
    if plan.get("format") != PLAN_FORMAT:
        raise SystemExit(f"build ahead: plan format {plan.get('format')} is not {PLAN_FORMAT}")
    os.chdir(plan["cwd"])

    def log(line: str) -> None:
        with open(plan["log"], "a") as file:
            file.write(f"{time.strftime('%H:%M:%S')} (second builder) {line}\n")

    declared = _suite_cases([c["file"] for c in plan["cases"]])
    cases = [declared[c["case_id"]] for c in reversed(plan["cases"]) if c["case_id"] in declared]
    cache_dir = Path(plan["cache_dir"])
    progress = Progress(lambda text: (sys.stdout.write(text.replace("[quantbench] ", "[quantbench] (second builder) ", 1)),
                                      sys.stdout.flush()), live=False)
    cache = ArtifactCache(cache_dir / "artifacts", on_wait=lambda key: progress(f"waiting for the other builder's {key}"))
    models = ModelState(cache, cache_dir / "models", progress, plan["profile"], None, lambda: Path(plan["claims"]))
    claims = Claims(Path(plan["claims"]), "second")
    started = time.monotonic()

    def build(case: Any) -> None:
        progress.start(case.case_id)
        try:
            progress("building ahead, from the end of the run's list")
            path, built = build_case(models, case, plan["settings"])
            log(f"[{case.case_id}] artifact {path} ({'built' if built else 'cached'}) ahead of the timing")
        finally:
            progress.finish()

    taken = _walk(cases, claims, build, log)
    log(f"took {taken} of {len(cases)} cases in {time.monotonic() - started:.1f} s{_torch_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
