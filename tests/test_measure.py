"""The timed loop and the warmup on their own: the stopping rule (minimum count AND minimum
duration, capped by a maximum), `valid`, and that only the call sits between the two clock
reads of a latency. A deterministic clock makes the stopping rule exact; the real clock checks
what is inside the timed region."""
import time

import pytest

from harness.runner.measure import timed_loop, warmup

MS = 1_000_000  # ns


class FakeClock:
    """Nanoseconds that move only when the code under test makes them move: every read
    advances by `read_ns`, every call of `call()` by `call_ns`."""

    def __init__(self, call_ns: int, read_ns: int = 0) -> None:
        self.now, self.call_ns, self.read_ns, self.calls = 0, call_ns, read_ns, 0

    def __call__(self) -> int:
        value = self.now
        self.now += self.read_ns
        return value

    def call(self) -> None:
        self.calls += 1
        self.now += self.call_ns


def test_loop_stops_at_the_minimum_duration_when_it_comes_after_the_minimum_count():
    clock = FakeClock(call_ns=100 * MS)
    result = timed_loop(clock.call, min_runs=5, min_duration_s=1.0, max_duration_s=10.0, clock=clock)
    assert result["n_runs"] == clock.calls == 10  # 10 x 100 ms = the 1 s minimum; 5 calls were not enough
    assert result["latencies_ms"] == [100.0] * 10
    assert result["duration_s"] == pytest.approx(1.0) and result["valid"] is True


def test_loop_stops_at_the_minimum_count_when_it_comes_after_the_minimum_duration():
    clock = FakeClock(call_ns=1000 * MS)
    result = timed_loop(clock.call, min_runs=7, min_duration_s=1.0, max_duration_s=60.0, clock=clock)
    assert result["n_runs"] == 7 and result["valid"] is True  # 1 s was reached after the first call


def test_the_cap_stops_the_loop_and_makes_it_invalid():
    clock = FakeClock(call_ns=1000 * MS)
    result = timed_loop(clock.call, min_runs=100, min_duration_s=1.0, max_duration_s=3.0, clock=clock)
    assert result["n_runs"] == 3 and result["valid"] is False  # count not met
    clock = FakeClock(call_ns=1000 * MS)
    result = timed_loop(clock.call, min_runs=1, min_duration_s=5.0, max_duration_s=3.0, clock=clock)
    assert result["n_runs"] == 3 and result["valid"] is False  # duration not met


def test_a_single_call_longer_than_the_cap_is_one_invalid_latency():
    clock = FakeClock(call_ns=7000 * MS)
    result = timed_loop(clock.call, min_runs=10, min_duration_s=1.0, max_duration_s=2.0, clock=clock)
    assert result["latencies_ms"] == [7000.0] and result["valid"] is False


def test_only_the_call_is_between_the_clock_reads():
    # Every clock read moves the clock by 1 ns: a latency is the call plus exactly one read
    # (the one that ends it). A second read, a sensor read or a sleep inside would show here.
    clock = FakeClock(call_ns=5 * MS, read_ns=1)
    result = timed_loop(clock.call, min_runs=20, min_duration_s=0.0, max_duration_s=10.0, clock=clock)
    assert result["n_runs"] == 20
    assert set(result["latencies_ms"]) == {(5 * MS + 1) / 1e6}


def test_on_the_real_clock_each_latency_contains_its_call_and_little_else():
    inner = []

    def call():
        start = time.perf_counter_ns()
        sum(range(200))
        inner.append(time.perf_counter_ns() - start)

    result = timed_loop(call, min_runs=2000, min_duration_s=0.0, max_duration_s=30.0)
    assert result["n_runs"] == len(inner)
    outer_ns = [ms * 1e6 for ms in result["latencies_ms"]]
    # Each latency is its own call's (the list is in call order) and contains it...
    assert all(o >= i for o, i in zip(outer_ns, inner))
    # ... and in the least disturbed call (a busy machine preempts some, not all 2000) the
    # loop adds no more than two clock reads' worth, far below anything a bookkeeping step costs.
    assert min(o - i for o, i in zip(outer_ns, inner)) < 50_000


def test_warmup_runs_the_count_and_the_duration():
    clock = FakeClock(call_ns=100 * MS)
    assert warmup(clock.call, runs=3, min_s=1.0, clock=clock) == 10  # the duration decides
    clock = FakeClock(call_ns=100 * MS)
    assert warmup(clock.call, runs=20, min_s=1.0, clock=clock) == 20  # the count decides
    clock = FakeClock(call_ns=100 * MS)
    assert warmup(clock.call, runs=0, min_s=0.0, clock=clock) == 0


def test_warmup_is_capped_but_always_warms_once():
    clock = FakeClock(call_ns=2000 * MS)
    assert warmup(clock.call, runs=10, min_s=0.2, max_s=5.0, clock=clock) == 3  # 6 s > 5 s cap after the 3rd
    clock = FakeClock(call_ns=9000 * MS)
    assert warmup(clock.call, runs=10, min_s=0.2, max_s=5.0, clock=clock) == 1


def test_the_timed_batch_is_full_even_when_the_data_is_not():
    import numpy as np

    from harness.runner.measure import timed_batch

    data = {"a": np.arange(3 * 2).reshape(3, 2), "b": np.arange(3)}
    full, note = timed_batch(data, 2)
    assert full["a"].tolist() == [[0, 1], [2, 3]] and note == ""
    padded, note = timed_batch(data, 8)
    assert len(padded["a"]) == len(padded["b"]) == 8  # never a silently smaller batch
    assert padded["b"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert note == "the evaluation data has 3 samples, fewer than batch 8: the timed batch repeats them to fill it"


def test_a_runner_whose_data_cannot_fill_a_batch_times_a_full_one_and_says_so(tmp_path):
    import numpy as np

    from tests.runner_job import logreg, run_runner

    _, inputs = logreg(tmp_path / "job" / "model")
    with np.load(inputs) as npz:
        few = {"input": npz["input"][:3]}
    np.savez(tmp_path / "three.npz", **few)
    result, outputs = run_runner(tmp_path / "job", batch_size=8, inputs=tmp_path / "three.npz")
    assert result["status"] == "ok", result["reason"]
    assert result["batch_size"] == 8 and "3 samples, fewer than batch 8" in result["timed_batch_note"]
    assert outputs["logits"].shape == (3, 10)  # the evaluation pass scores the real samples only
    full, _ = run_runner(tmp_path / "full", batch_size=2)
    assert full["timed_batch_note"] == ""
