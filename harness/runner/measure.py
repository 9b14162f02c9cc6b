"""The measurement method: load, first inference, warmup, timed loop, evaluation pass.

The timed loop runs until BOTH a minimum count and a minimum duration are met, capped
by a maximum duration (as TFLite's benchmark_model and MLPerf LoadGen do). Every
latency is kept; statistics are computed on the host.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np


def clock_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e6


def timed_loop(call: Callable[[], object], min_runs: int, min_duration_s: float, max_duration_s: float,
               clock: Callable[[], int] = time.perf_counter_ns) -> dict:
    """Call `call` until it ran at least `min_runs` times AND for at least `min_duration_s`,
    or until `max_duration_s` passed (then `valid` is False). Only the call is between the
    two clock reads of a latency; the bookkeeping happens outside them. `clock` returns
    nanoseconds (tests pass a deterministic one)."""
    latencies: List[float] = []
    append = latencies.append
    begin = clock()
    min_ns, max_ns = int(min_duration_s * 1e9), int(max_duration_s * 1e9)
    while True:
        start = clock()
        call()
        end = clock()
        append((end - start) / 1e6)
        elapsed = end - begin
        if (len(latencies) >= min_runs and elapsed >= min_ns) or elapsed >= max_ns:
            break
    duration_s = (clock() - begin) / 1e9
    return {
        "latencies_ms": latencies,
        "n_runs": len(latencies),
        "duration_s": duration_s,
        # The minimums were met, rather than the cap cutting the loop short.
        "valid": len(latencies) >= min_runs and duration_s >= min_duration_s,
    }


def warmup(call: Callable[[], object], runs: int, min_s: float, max_s: Optional[float] = None,
           clock: Callable[[], int] = time.perf_counter_ns) -> int:
    """Untimed calls: at least `runs` AND at least `min_s` seconds, but never past `max_s`
    (a model that takes seconds per call would otherwise warm up for minutes). Returns the count."""
    done = 0
    begin = clock()
    min_ns = int(min_s * 1e9)
    max_ns = None if max_s is None else int(max_s * 1e9)
    while done < runs or clock() - begin < min_ns:
        if max_ns is not None and done and clock() - begin >= max_ns:
            break
        call()
        done += 1
    return done


def timed_batch(inputs: Dict[str, np.ndarray], batch_size: int) -> Tuple[Dict[str, np.ndarray], str]:
    """The batch the timed loop runs: the first `batch_size` evaluation samples. With fewer
    samples than the batch, they are repeated to fill it (never a smaller batch than the row
    declares) and the note says so; otherwise the note is empty."""
    n = len(next(iter(inputs.values())))
    if n >= batch_size:
        return {k: v[:batch_size] for k, v in inputs.items()}, ""
    rows = np.arange(batch_size) % n
    return ({k: v[rows] for k, v in inputs.items()},
            f"the evaluation data has {n} sample{'s' if n != 1 else ''}, fewer than batch {batch_size}: "
            f"the timed batch repeats them to fill it")


def evaluation_pass(run_batch: Callable[[Dict[str, np.ndarray]], List[np.ndarray]],
                    inputs: Dict[str, np.ndarray], batch_size: int, output_names: List[str]) -> Dict[str, np.ndarray]:
    """Run every evaluation sample through the same call as the timed loop.

    The last short batch is padded by repeating its final sample, so models with a
    static batch dimension work; padded rows are dropped from the outputs.
    """
    n = len(next(iter(inputs.values())))
    collected: Dict[str, List[np.ndarray]] = {name: [] for name in output_names}
    for start in range(0, n, batch_size):
        chunk = {k: v[start:start + batch_size] for k, v in inputs.items()}
        real = len(next(iter(chunk.values())))
        if real < batch_size:
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - real, axis=0)]) for k, v in chunk.items()}
        outputs = run_batch(chunk)
        for name, value in zip(output_names, outputs):
            collected[name].append(np.asarray(value)[:real])
    return {name: np.concatenate(parts) for name, parts in collected.items()}
