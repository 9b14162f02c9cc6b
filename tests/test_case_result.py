"""The typed result: CaseResult's row follows the one column registry, and the sections merge
rounds the way the session pooled them in the row before (harness/session.py's _pool_rounds and
fill_power_columns, as of issue 20)."""
from dataclasses import fields

import pytest

from harness import columns, report
from harness.device_columns import Device
from harness.mixed_columns import MIXED_COLUMNS, Mixed
from harness.power_columns import Power
from harness.result import CaseResult
from harness.rounds import round_columns
from harness.sections import UNSET, Accuracy, Comparison, Fleet, Identity, Latency, Outcome, Provenance, SizeMemory
from harness.stats import latency_stats


def _filled(section: type, **overrides):
    """Every column of a section given a value (its name), but the fields that are not columns."""
    names = set(section.column_names())
    return section(**{f.name: f.name for f in fields(section) if f.name in names}, **overrides)


def test_an_unmeasured_result_has_exactly_the_core_columns_in_the_registry_order():
    row = CaseResult(Identity(case_id="c")).to_row()
    assert list(row) == columns.COLUMNS == report.COLUMNS
    assert row["case_id"] == "c" and all(v is None for k, v in row.items() if k != "case_id")


def test_a_full_result_has_every_registered_column_in_the_registry_order():
    result = CaseResult(_filled(Identity), outcome=_filled(Outcome), latency=_filled(Latency),
                        accuracy=_filled(Accuracy, companions=(("top5", 0.9), ("f1_macro", 0.8))),
                        size=_filled(SizeMemory), power=_filled(Power), device=_filled(Device), mixed=_filled(Mixed),
                        provenance=_filled(Provenance), comparison=_filled(Comparison, paired_disagree=True),
                        fleet=_filled(Fleet))
    row = result.to_row()
    expected = [c for c in CaseResult.column_names() if c != columns.COMPANIONS]
    at = expected.index("speedup_ci_low")  # companion scores sit where the registry says
    assert list(row) == expected[:at] + ["top5", "f1_macro"] + expected[at:]
    assert row["rounds_disagree"] is True  # the paired rounds' verdict replaces the rounds' own
    assert MIXED_COLUMNS == columns.group("mixed")
    assert len(set(columns.COLUMNS + columns.EXTRAS)) == len(columns.COLUMNS + columns.EXTRAS)


def test_throttling_only_a_later_round_could_tell_comes_after_the_rounds_columns():
    rounds = [Power.from_result({"power": {}, "n_runs": 1, "duration_s": 1.0}),
              Power.from_result({"power": {"throttled": True, "throttle_reasons": ["thermal"]}, "n_runs": 1,
                                 "duration_s": 1.0})]
    latency = Latency.merge([Latency.from_result(_result([1.0, 1.1])), Latency.from_result(_result([1.0, 1.2]))])
    row = CaseResult(Identity(), latency=latency, power=Power.merge(rounds)).to_row()
    extras = list(row)[len(columns.COLUMNS):]
    assert extras == ["power_coverage", "rounds", "round_p50_ms", "rounds_disagree", "round_n_runs", "throttle_reasons"]
    assert row["throttled"] is True and row["throttle_reasons"] == "thermal"


def _result(latencies, duration_s=1.0, valid=True, **extra):
    return {"latencies_ms": latencies, "batch_size": 2, "init_ms": 5.0, "first_ms": 3.0, "n_runs": len(latencies),
            "duration_s": duration_s, "valid": valid, **extra}


def test_latency_merge_pools_rounds_like_the_session_did():
    rounds = [_result([1.0, 2.0, 3.0], duration_s=0.5, timed_batch_note="repeated"),
              _result([2.0, 4.0], duration_s=0.25, valid=False, init_ms=9.0)]
    merged = Latency.merge([Latency.from_result(r) for r in rounds])
    # the old pooling: statistics over every latency, n_runs/duration/valid over the rounds,
    # round_columns of the per-round p50s, round_n_runs; init/first/batch note from the first round
    expected = {**latency_stats([1.0, 2.0, 3.0, 2.0, 4.0], 2), "n_runs": 5, "duration_s": 0.75, "valid": False,
                **round_columns([2.0, 3.0]), "round_n_runs": "3 2", "init_ms": 5.0, "first_ms": 3.0,
                "batch_note": "repeated"}
    assert {k: v for k, v in merged.columns().items() if k in expected} == expected
    assert merged.latency_p50_ms == 2.0 and merged.latency_mean_ms == pytest.approx(2.4)
    assert merged.round_p50_ms == "2 3" and merged.rounds_disagree is True  # 3/2 - 1 = 0.5 > DISAGREE
    assert merged.throughput_ips == pytest.approx(2 * 5 / (12.0 / 1000.0))
    assert list(merged.latencies) == [1.0, 2.0, 3.0, 2.0, 4.0] and merged.round_sizes == [3, 2]
    one = Latency.merge([Latency.from_result(rounds[1])])
    assert one.rounds is UNSET and "rounds" not in one.columns() and "batch_note" not in one.columns()


def test_power_from_a_result_and_merged_over_rounds():
    first = _result([1.0] * 10, power={"power_source": "rapl", "power_mean_w": 2.0, "window_s": 0.5,
                                       "power_coverage": 0.9, "throttled": False, "throttle_reasons": [],
                                       "probes_before": {"zone": {"temps_c": {"a": 40.0, "b": 42.0}}}})
    power = Power.from_result(first, source="none: default")
    # the old fill_power_columns: energy per call = mean W x window / calls; per sample / batch
    assert power.energy_mj_per_inf == pytest.approx(1000.0 * 2.0 * 0.5 / 10)
    assert power.energy_mj_per_sample == pytest.approx(power.energy_mj_per_inf / 2)
    assert power.temp_before_c == 42.0 and power.temp_after_c is None and power.throttled is False
    assert power.power_source == "rapl" and Power.from_result(_result([1.0])).power_source is None
    later = Power.from_result(_result([1.0], power={"throttled": True, "throttle_reasons": ["thermal", "power cap"]}))
    merged = Power.merge([power, later])
    assert merged.throttled is True and merged.throttle_reasons == "thermal; power cap"
    assert merged.power_mean_w == 2.0 and merged.temp_before_c == 42.0  # the first round's window
    unknown = Power.from_result(_result([1.0], power={}))
    assert Power.merge([unknown, unknown]) == unknown  # no round could tell: nothing to combine
    assert Power.merge([power, unknown]).throttled is None  # one round that cannot tell: not known to be free


def test_a_delegates_report_in_the_manifest_becomes_the_delegation_columns_beside_quantized_ops():
    notes = {"delegation": {"summary": "xnnpack 5/7 ops in 2 partitions; portable: aten.view_copy x2",
                            "complete": False}}
    row = CaseResult(Identity(), provenance=Provenance(**Provenance.delegation(notes), quantized_ops="Conv 2/2")).to_row()
    extras = list(row)[len(columns.COLUMNS):]
    assert extras == ["quantized_ops", "delegated_ops", "delegation_complete"]
    assert row["delegated_ops"].startswith("xnnpack 5/7") and row["delegation_complete"] is False
    assert Provenance.delegation({}) == {} and Provenance.delegation({"delegation": {"summary": ""}}) == {}
