"""Latency statistics from the raw per-inference latencies (host side)."""
from __future__ import annotations

import numpy as np

NOISE_THRESHOLD = 0.10  # IQR/median at which torch.utils.benchmark warns of noise
PERCENTILES = (50, 90, 95, 99)


def latency_stats(latencies_ms, batch_size: int = 1) -> dict[str, float]:
    """mean, std (sample; NaN for a single latency), min, p50/p90/p95/p99, max, IQR/median and throughput.

    Percentiles use numpy's default linear interpolation. Throughput is inferences
    (samples) per second over the time actually spent inside timed calls.
    """
    lat = np.asarray(latencies_ms, dtype=np.float64)
    if lat.size == 0:
        raise ValueError("no latencies to summarize")
    p25, p50, p75 = np.percentile(lat, [25, 50, 75])
    stats = {
        "latency_mean_ms": float(lat.mean()),
        # The sample standard deviation of one latency is undefined, not zero.
        "latency_std_ms": float(lat.std(ddof=1)) if lat.size > 1 else float("nan"),
        "latency_min_ms": float(lat.min()),
        "latency_max_ms": float(lat.max()),
        "iqr_over_median": float((p75 - p25) / p50) if p50 > 0 else float("nan"),
        "throughput_ips": float(batch_size * lat.size / (lat.sum() / 1000.0)) if lat.sum() > 0 else float("nan"),
    }
    for q, value in zip(PERCENTILES, np.percentile(lat, PERCENTILES)):
        stats[f"latency_p{q}_ms"] = float(value)
    stats["noisy"] = bool(stats["iqr_over_median"] >= NOISE_THRESHOLD)
    return stats
