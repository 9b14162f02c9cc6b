"""What a row's comparison is against, in words: the baseline it names, and how its execution
format relates to the eager model it came from.

A speedup compares quantization only when both sides ran the same way: the fp32 baseline of a
case is the fp32 recipe of the same framework, source and execution format
(`harness.quantize.fp32_recipe`), measured on the same board as the case (`Baselines`), and the row names it (`baseline_names`: `baseline_case`, `baseline_recipe`).
The fp32 artifact itself can be slower than the eager module it was saved from (torch.export's
unlifted module checks its input guards on every call; an exported LSTM runs its loop in the
graph): the build measures both on the host (`notes.versus_eager`), and past
SLOWER_THAN_EAGER the fp32 row, and every row compared with it, says so (`execution_note`).

A speedup is only as trustworthy as both of its sides: `baseline_timing` carries whether the
fp32 measurement the speedup divides by ran throttled or stopped at its time cap (its paired
rounds beside the case, or its row with one round) into the row (`baseline_throttled`,
`baseline_valid`, `baseline_timing_note`), where the candidate rule reads it.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from harness.fleet import Board, SharedRun
from harness.power_columns import combined_throttling
from harness.quantize import fp32_recipe
from harness.result import Measured
from harness.suite import Case
from harness.values import plain
from harness.vocabulary import BASELINE_MODE, STATUS_OK

SLOWER_THAN_EAGER = 2.0  # an fp32 artifact this many times slower than its eager module gets a note


def baseline_names(baseline: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The comparison section's baseline_case and baseline_recipe: the speedup's other side, by name."""
    if baseline is None:
        return {}
    return {"baseline_case": baseline.get("case_id"), "baseline_recipe": baseline.get("recipe")}


def execution_note(manifest: Mapping[str, Any]) -> Optional[str]:
    """The fp32 artifact's note when it ran far slower than its eager module at build time."""
    measured = (manifest.get("notes") or {}).get("versus_eager") or {}
    ratio = measured.get("ratio")
    if ratio is None or ratio < SLOWER_THAN_EAGER:
        return None
    fmt = ((manifest.get("notes") or {}).get("torch_load") or {}).get("format") or "saved"
    return (f"this {fmt} artifact ran {ratio:.1f}x slower than the eager module it was saved from "
            f"({measured['artifact_ms']:.3g} vs {measured['eager_ms']:.3g} ms per call at batch {measured.get('batch', 1)}, "
            f"on the build host): its latency is the format's as much as the model's")


def baseline_timing(baseline: Optional[Mapping[str, Any]], rounds: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Whether the fp32 side of a row's speedup can be trusted: `rounds`, the runner results of
    the baseline's paired rounds (the speedup is theirs), else the fp32 `baseline` row itself.
    baseline_throttled: True if any of them ran throttled, False only if every one could tell it
    did not; baseline_valid: False if any stopped at its time cap before its minimums."""
    if rounds:
        seen = [((done.get("power") or {}).get("throttled"), (done.get("power") or {}).get("throttle_reasons") or [],
                 done.get("valid")) for done in rounds]
        where = [f"round {i + 1}/{len(rounds)}" for i in range(len(rounds))]
    elif baseline is not None and baseline.get("status") == STATUS_OK:
        reasons = str(baseline.get("throttle_reasons") or "")
        seen = [(plain(baseline.get("throttled")), [reasons] if reasons else [], plain(baseline.get("valid")))]
        where = [f"row {baseline.get('case_id')}"]
    else:
        return {}
    capped = [v is not None and not v for _, _, v in seen]  # valid false (or 0, as the database stores it)
    throttled = combined_throttling([None if t is None else bool(t) for t, _, _ in seen])
    valid = None if all(v is None for _, _, v in seen) else not any(capped)
    notes = [f"{at} ran throttled" + (f" ({'; '.join(why)})" if why else "") for at, (t, why, _) in zip(where, seen) if t]
    notes += [f"{at} stopped at its time cap before its minimums (valid=false)" for at, cap in zip(where, capped) if cap]
    out: dict[str, Any] = {"baseline_throttled": throttled, "baseline_valid": valid}
    if notes:
        out["baseline_timing_note"] = "fp32 baseline " + ", ".join(notes)
    return out


def inherited_note(baseline: Optional[Mapping[str, Any]]) -> Optional[str]:
    """A row compared with an fp32 baseline that carries an execution note repeats it."""
    note = (baseline or {}).get("execution_note")
    return f"baseline {baseline['case_id']}: {note}" if note else None


def baseline_case(case: Case) -> Case:
    """The fp32 case a case is compared with: the fp32 recipe of the same source and execution
    format (tflite's keras and litert-torch rows each have their own, torch's TorchScript and
    compiled recipes theirs)."""
    fp32 = fp32_recipe(case.framework, case.recipe)
    return replace(case, mode=BASELINE_MODE, recipe=fp32, budget=None, na_reason=fp32.batch_reason(case.batch_size) or "")


def fp32_of(case: Case) -> Optional[Case]:
    """The fp32 case this one is compared with (None for an fp32 or n/a case, or when the
    framework has no fp32 recipe for its source)."""
    if case.recipe is None or case.na_reason or case.mode == BASELINE_MODE:
        return None
    try:
        return baseline_case(case)
    except LookupError:
        return None


class Baselines:
    """A session's fp32 bookkeeping: every fp32 measurement by (board, fp32 case id), the
    evaluation outputs of the one on the board in use (what its other cases are scored
    against), and the fp32 row each case was compared with."""

    def __init__(self, shared: Optional[SharedRun]) -> None:
        self.shared = shared  # a fleet's: measurements other workers made on the same board
        self.measured: dict[tuple[str, str], Measured] = {}
        self.outputs: dict[str, dict[str, np.ndarray]] = {}  # fp32 case_id -> evaluation outputs on the board in use
        self.compared_with: dict[str, Optional[dict[str, Any]]] = {}  # case_id -> the fp32 row it was compared with

    def on(self, board: Board, fp32: Case, measure: Callable[[Case], Measured], lost: Callable[[Board, dict], bool],
           record: Callable[[Measured], None]) -> Measured:
        """The fp32 case measured on this board: from this process, from another worker's
        measurement there, or measured now with `measure` (and given to `record`, which writes
        it as the fp32 row if the run has none yet)."""
        key = (board.name, fp32.case_id)
        if key not in self.measured and self.shared is not None:
            found = self.shared.baseline(board.name, fp32.case_id)
            if found is not None:
                self.measured[key] = found
        if key not in self.measured:
            self.outputs.pop(fp32.case_id, None)  # another board's outputs are no reference here
            measured = replace(measure(fp32), outputs=self.outputs.get(fp32.case_id))
            if lost(board, measured.row) and board.pool:
                return measured  # the board left the pool: no baseline of its, and the case in progress is the loss
            if self.shared is not None:
                self.shared.save_baseline(board.name, measured)
            self.measured[key] = measured
            record(measured)
        measured = self.measured[key]
        self.outputs.pop(fp32.case_id, None)
        if measured.outputs is not None:
            self.outputs[fp32.case_id] = measured.outputs  # what scoring compares this board's case with
        return measured

    def reference(self, case: Case, outputs: Optional[dict[str, np.ndarray]]) -> Optional[dict[str, np.ndarray]]:
        """The fp32 outputs a case is scored against: an fp32 case's own (kept for the board's
        other cases), else its baseline's on this board (None when it has none)."""
        if case.mode == BASELINE_MODE:
            self.outputs[case.case_id] = outputs
            return outputs
        return self.outputs.get(baseline_case(case).case_id)


def paired_baseline(case: Case, baseline: Optional[Mapping[str, Any]], rounds: int, artifact_of):
    """(baseline case, its artifact) to run beside each round, when the case is measured in
    rounds and its fp32 baseline measured fine; None otherwise (fp32 itself, one round).
    `artifact_of(case)`: the case's artifact (cached: the baseline ran as its own row)."""
    if rounds < 2 or case.mode == BASELINE_MODE or not baseline or baseline.get("status") != STATUS_OK:
        return None
    base = baseline_case(case)
    return base, artifact_of(base)
