"""The path of one case on a leased board, as named steps:

    choose float layers -> build -> check -> rounds -> score -> compare   (then the session stores it)

Each step is a function of the session (its services: builds, the board in use, the store's
log, progress) and the `CaseRun` it fills: its `result` (harness/result.py) gets a section
at a time, and the row is made once, at the end (`CaseResult.to_row`). A step that finds the case does not apply raises
`NotApplicable` (or `Skip`, with the reason as it is); any other exception makes an error row
with the message condensed to one line, the traceback in the run's log.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from harness import baselines, budget, compat
from harness.device_columns import Device, gpu_memory
from harness.metrics import Metric, resolve_metric
from harness.mixed_columns import Mixed
from harness.power_columns import Power
from harness.quantize import NotApplicable
from harness.quantize.onnx_weights import size_note
from harness.report import versus_baseline
from harness.result import CaseResult
from harness.rounds import Rounds, paired_speedup, run_rounds
from harness.sections import UNSET, Accuracy, Comparison, Fleet, Identity, Latency, Outcome, Provenance
from harness.sensitivity import choose_before_build
from harness.suite import Case, Timing
from harness.vocabulary import BASELINE_MODE, STATUS_ERROR, STATUS_NA, STATUS_OK


class CaseFailure(Exception):
    """A case step failed; the message is one actionable line for the row."""


class Skip(Exception):
    """The case does not apply here; the message is the row's reason, as it is."""


def condense(exc: BaseException, limit: int = 300) -> str:
    """The framework's own message as one line, without the traceback."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, (CaseFailure, NotApplicable)):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class CaseRun:
    """One case on the board in use, as the steps fill it in."""

    case: Case
    timing: Timing
    baseline: Optional[dict[str, Any]]  # the fp32 row it is compared with (measured on the same board)
    result: CaseResult
    context: Any = None  # the BuildContext
    artifact: Any = None
    rounds: Rounds = field(default_factory=Rounds)
    paired: Any = None  # (fp32 case, its artifact) run beside each round

    def stop(self, status: str, reason: str) -> "CaseRun":
        """The case ends here (n/a or error): the sections filled so far stay, no latencies."""
        self.result = self.result.with_(outcome=Outcome(status, reason))
        self.rounds = Rounds()
        return self

    @property
    def latencies(self) -> list[float]:  # every latency, round after round
        return [lat for done in self.rounds.results for lat in done["latencies_ms"]]

    @property
    def round_sizes(self) -> list[int]:
        return [len(done["latencies_ms"]) for done in self.rounds.results]


def case_result(session, case: Case) -> CaseResult:
    """The result of a case on the board in use, before anything is measured."""
    info = session.target_info
    metric = resolve_metric(case.model.metric)
    return CaseResult(
        Identity(run_id=session.run_id, case_id=case.case_id, started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 suite=case.suite, model=case.model.name, framework=case.framework, mode=case.mode,
                 recipe=case.recipe.name if case.recipe else None, target=info.name, target_kind=info.kind,
                 profile=info.profile, device=info.device, batch_size=case.batch_size, threads=session.threads),
        accuracy=Accuracy(metric=metric.name, higher_is_better=metric.higher_is_better, accuracy_budget=case.budget),
        # deployed or reference numerics (an eager torch program): the answer's candidates are deployed rows
        provenance=Provenance(execution=case.recipe.deployment if case.recipe else UNSET),
        power=Power(power_source=f"none: no power sensor is sampled on {info.kind} target {info.name} "
                                 f"(profile {info.profile})"))


# -- the steps ------------------------------------------------------------------------------
def choose_float_layers(session, run: CaseRun) -> None:
    """The layers a `mixed` build keeps in float: named, or (keep_float="auto") searched within
    the budget before the build, which gets them through its context."""
    run.context = session._context(run.case)
    choose_before_build(run.context, run.case.recipe)  # keep_float="auto": the search hands the build its layers


def build(session, run: CaseRun) -> None:
    """Build the artifact, or fetch it from the cache: its size, provenance and (mixed) kept layers."""
    case, result = run.case, run.result
    session.progress(f"quantizing ({case.recipe.name})")
    artifact, built = run.context.artifact(case.recipe)
    run.artifact = artifact
    notes = artifact.manifest.get("notes", {})
    run.result = result.with_(
        identity=replace(result.identity, recipe=notes.get("recipe", result.identity.recipe)),
        size=replace(result.size, size_bytes=artifact.size_bytes),
        provenance=replace(result.provenance, artifact_key=artifact.manifest["key"],
                           artifact_sha256=artifact.manifest["sha256"],
                           # which ops compute in int8, e.g. "MatMul 1/1, Conv 0/53"
                           quantized_ops=str(notes["quantized_ops"]) if notes.get("quantized_ops") else UNSET,
                           # what a delegate took (notes["delegation"]: summary + complete), e.g.
                           # "xnnpack 12/14 ops in 2 partitions; portable: aten.view_copy x2"
                           **Provenance.delegation(notes),
                           # a compiled package's ISA, e.g. "avx512 avx512_vnni amx_tile (needs ...)"
                           built_isa=notes.get("built_isa_summary") or UNSET,
                           deprecated=deprecation(artifact.manifest) or UNSET),
        # kept_float, its precision, the search's outcome
        mixed=Mixed.from_manifest(artifact.manifest) if case.mode == "mixed" else result.mixed)
    session.store.log(f"[{case.case_id}] artifact {artifact.path} ({'built' if built else 'cached'})")


def deprecation(manifest: dict) -> Optional[str]:
    """The row's `deprecated`: the deprecation warnings its build recorded (first sentence of
    each) and the library version that warned, e.g. "torch.ao.quantization is deprecated ...
    (warned by torch 2.13.0+cpu)"; None when the build warned of nothing."""
    warned = (manifest.get("notes") or {}).get("deprecation_warnings") or []
    if not warned:
        return None
    first = [" ".join(str(w).split()).split(". ")[0].rstrip(".") for w in warned]
    libraries = manifest.get("libraries") or {}
    by = ", ".join(f"{name} {version}" for name, version in libraries.items())
    return "; ".join(dict.fromkeys(first)) + (f" (warned by {by})" if by else "")


def check(session, run: CaseRun) -> None:
    """What only the built artifact tells: a recipe's reason it cannot run here (e.g. int8
    matmul shapes a GPU kernel refuses), and version skew (which file needs which version),
    before shipping anything."""
    reason = run.case.recipe.artifact_reason(run.artifact, session.target_info, run.case.batch_size)
    if reason:
        raise Skip(reason)
    problem = compat.load_problem(run.artifact.path, run.artifact.manifest, session.target_info.facts,
                                  session.target_info.name)
    if problem:
        raise CaseFailure(problem)


def rounds(session, run: CaseRun) -> None:
    """The runner's rounds (ABBA with the fp32 baseline when there are several): the result's
    latency (pooled over every round), power, memory, device and provenance sections."""
    count = max(1, run.timing.rounds or 1)
    run.paired = baselines.paired_baseline(run.case, run.baseline, count,
                                           lambda base: session._context(base).artifact(base.recipe)[0])
    run.rounds = run_rounds(run.case, run.artifact, run.timing, run.paired, session._run_job, session._work_dir,
                            session.progress, session.target_info.name)
    result = run.rounds.first.result
    if result.get("nonfinite_outputs"):
        bad = ", ".join(f"{n} non-finite values in output {k!r}" for k, n in result["nonfinite_outputs"].items())
        raise CaseFailure(f"model produced NaN/Inf on the evaluation data ({bad})")
    run.result = measured(run.result, run.rounds.results)


def score(session, run: CaseRun) -> None:
    """The metric on the host, from the evaluation outputs (fp32's are kept: the board's other
    cases are scored against them); a case past its time budget keeps its latency unscored."""
    case, result, first = run.case, run.result, run.rounds.first.result
    if first.get("evaluation_skipped"):  # over the case's time budget: the latency is the result
        run.result = result.with_(accuracy=replace(result.accuracy, eval_samples=0), outcome=replace(
            result.outcome, reason=f"accuracy not scored: {first['evaluation_skipped']} "
                                   f"({time_budget_hint(session.options)})"))
        return
    session.progress("scoring accuracy")
    outputs = run.rounds.first.outputs
    metric: Metric = resolve_metric(case.model.metric)
    _, labels = session._evaluation(case)
    reference = session.baselines.reference(case, outputs)
    if metric.needs_reference and reference is None:
        why = (run.baseline or {}).get("reason") or "the fp32 baseline failed"
        raise CaseFailure(f"metric {metric.name} is scored against fp32 outputs, and the fp32 baseline has none ({why})")
    accuracy = metric.score(outputs, labels, reference)
    interval = metric.confidence_interval(outputs, labels, reference)
    low, high = interval if interval else (None, None)
    run.result = result.with_(accuracy=replace(
        result.accuracy, accuracy=accuracy, eval_samples=len(next(iter(outputs.values()))), accuracy_ci_low=low,
        accuracy_ci_high=high, companions=tuple(metric.companion_scores(outputs, labels, reference).items())))  # e.g. nn_agreement


def time_budget_hint(options) -> str:
    if options.case_budget_s is not None:
        return "set by --case-budget"
    return f"the {options.profile} profile's budget; raise it with --case-budget SECONDS, or run --qb-profile nightly"


def compare(session, run: CaseRun) -> None:
    """Against the fp32 baseline of the same board: speedup (over paired rounds, with its
    interval), size ratio, accuracy delta, notes, and the accuracy budget."""
    case, result, baseline, artifact = run.case, run.result, run.baseline, run.artifact
    accuracy, size, comparison = result.accuracy, result.size, result.comparison
    versus = versus_baseline({"latency_p50_ms": result.latency.latency_p50_ms, "size_bytes": size.size_bytes,
                              "accuracy": accuracy.accuracy}, baseline)
    if versus:
        comparison = replace(comparison, speedup=versus["speedup"])
        size = replace(size, size_ratio=versus["size_ratio"])
        accuracy = replace(accuracy, accuracy_delta=versus.get("accuracy_delta"))
    if run.paired:  # the speedup over paired rounds, with its interval, replaces the single ratio
        comparison = replace(comparison, **Comparison.paired(paired_speedup(run.rounds.baseline_p50s, run.rounds.case_p50s)))
    comparison = replace(comparison, **baselines.baseline_names(baseline))  # the speedup's other side, by name
    if case.mode != BASELINE_MODE and comparison.speedup is not None:  # ... and whether its timing can be trusted
        comparison = replace(comparison, **baselines.baseline_timing(baseline, run.rounds.baseline_results if run.paired else ()))
    execution = (baselines.execution_note(artifact.manifest) if case.mode == BASELINE_MODE
                 else baselines.inherited_note(baseline))
    if execution:  # an fp32 artifact far slower than its eager module: the row says so
        comparison = replace(comparison, execution_note=execution)
    note = size_note(case.mode, artifact.manifest.get("notes", {}).get("weight_storage"), size.size_ratio)
    if note:  # an int8 file that keeps float weights, or is not smaller, says why
        size = replace(size, size_note=note)
    if case.budget is not None:
        accuracy = replace(accuracy, within_budget=budget.within_budget(case.budget, accuracy.columns(), baseline))
    run.result = result.with_(accuracy=accuracy, size=size, comparison=comparison)


STEPS = (choose_float_layers, build, check, rounds, score, compare)


def measure(session, case: Case, timing: Timing, baseline) -> CaseRun:
    """Walk the steps for one case on the board in use; the CaseRun has its row, every latency
    (round after round), the first round's outcome, and the latencies each round contributed."""
    run = CaseRun(case, timing, baseline, case_result(session, case))
    if case.recipe is None or case.na_reason:  # no recipe, or one whose artifact cannot take this batch
        return run.stop(STATUS_NA, case.na_reason)
    reason = case.recipe.not_applicable_reason(case.model, session.target_info)
    if reason:
        return run.stop(STATUS_NA, reason)
    try:
        for step in STEPS:
            step(session, run)
    except Skip as exc:
        run.stop(STATUS_NA, str(exc))
    except NotApplicable as exc:
        run.stop(STATUS_NA, condense(exc))
    except Exception as exc:  # any failure becomes an error row; the other cases still run
        session.store.log(f"[{case.case_id}] FAILED\n{traceback.format_exc()}")
        run.stop(STATUS_ERROR, condense(exc) + f" (details: {session.store.log_path})")
    return run


def measured(result: CaseResult, rounds: list[dict[str, Any]]) -> CaseResult:
    """The sections the runner's results (one per round) give: latency and power merged over
    the rounds; provenance, memory and the device from the first."""
    first = rounds[0]
    system = first.get("system", {})
    device = Device.from_result(first)  # GPU state and memory, execution providers, copies
    return result.with_(
        identity=replace(result.identity, threads=first["threads"],
                         device=device.gpu_name or system.get("cpu_model") or result.identity.device),
        outcome=Outcome(STATUS_OK, ""),
        latency=Latency.merge([Latency.from_result(done) for done in rounds]),
        size=replace(result.size, peak_rss_mb=first["peak_rss_mb"], **gpu_memory(first)),
        power=Power.merge([Power.from_result(done, result.power.power_source) for done in rounds]),
        device=device,
        provenance=replace(result.provenance, **Provenance.runner(first)),
    )


# -- rows of a case a lost board never measured ------------------------------------------------
def gone_row(session, case: Case, placement, reason: str) -> dict[str, Any]:
    """No board of the placement could be leased (all gone, or the named target unusable)."""
    metric = resolve_metric(case.model.metric)
    first = placement.boards[0]
    return CaseResult(
        Identity(run_id=session.run_id, case_id=case.case_id, started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 suite=case.suite, model=case.model.name, framework=case.framework, mode=case.mode,
                 recipe=case.recipe.name if case.recipe else None, target=placement.name, target_kind=first.kind,
                 profile=first.profile, batch_size=case.batch_size),
        accuracy=Accuracy(metric=metric.name, higher_is_better=metric.higher_is_better, accuracy_budget=case.budget),
        outcome=Outcome(STATUS_ERROR, f"{reason} (not run)"),
        fleet=Fleet(pool=placement.pool, worker=session.worker or None)).to_row()


def died_row(session, case: Case, board, baseline: dict[str, Any]) -> dict[str, Any]:
    """The pool's board stopped answering while it measured the case's fp32 baseline."""
    result = case_result(session, case)
    return on_board(result.with_(outcome=Outcome(
        STATUS_ERROR, f"board {board.name} stopped answering while measuring the fp32 baseline: {baseline.get('reason')}")),
        session, board).to_row()


def on_board(result: CaseResult, session, board) -> CaseResult:
    """Which board ran it (a pool's board: the row's target is the pool), the lease's wait and when it began."""
    fleet = Fleet(pool=board.pool, board=board.name, worker=session.worker or None, lease_wait_s=round(session._waited, 3),
                  held_from=getattr(session, "_hold", None))  # held_until: once the hold ends (BenchSession.run_case)
    held = getattr(session, "_held", None)  # a labgrid place: which, and who held it
    if held is not None:
        fleet = replace(fleet, lab_place=held.place, lab_holder=held.holder,
                        power_cycled=getattr(session, "_power_note", None) or UNSET)
    identity = replace(result.identity, target=board.pool) if board.pool else result.identity
    return result.with_(fleet=fleet, identity=identity)


# -- host work before a board is held -----------------------------------------------------------
def prepare(session, case: Case, placement) -> None:
    """Host work before holding a board: the fp32 model (its weights are in every cache
    key) and, once the placement's facts are known (a board opened by any process of the
    run: they decide which recipes apply), the artifacts of the case and its baseline.
    A failure here is ignored: it happens again under the lease and becomes the row's reason."""
    if not session.fleet or case.recipe is None:
        return
    info = session.boards.known_info(placement)
    for needed in [c for c in (baselines.fp32_of(case), case) if c is not None]:
        try:
            context = session._context(needed)
            context.key_parts(needed.recipe, float_choice=False)  # builds or loads the fp32 model (its weights are in the key)
            if info is not None and not needed.recipe.not_applicable_reason(needed.model, info):
                choose_before_build(context, needed.recipe)  # keep_float="auto": the search hands the build its layers
                artifact, built = context.artifact(needed.recipe)
                if built:
                    session.store.log(f"[{needed.case_id}] artifact {artifact.path} (built)")
        except Exception:
            pass
