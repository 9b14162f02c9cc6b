import numpy as np
import pytest

from harness.stats import NOISE_THRESHOLD, latency_stats


def test_statistics_match_numpy_on_known_data():
    rng = np.random.default_rng(7)
    lat = rng.lognormal(mean=0.0, sigma=0.3, size=1001)
    s = latency_stats(lat, batch_size=4)
    assert s["latency_mean_ms"] == pytest.approx(np.mean(lat))
    assert s["latency_std_ms"] == pytest.approx(np.std(lat, ddof=1))
    assert s["latency_min_ms"] == lat.min() and s["latency_max_ms"] == lat.max()
    for q in (50, 90, 95, 99):
        assert s[f"latency_p{q}_ms"] == pytest.approx(np.percentile(lat, q))
    q75, q25 = np.percentile(lat, [75, 25])
    assert s["iqr_over_median"] == pytest.approx((q75 - q25) / np.median(lat))
    assert s["throughput_ips"] == pytest.approx(4 * len(lat) / (lat.sum() / 1000))


def test_exact_values_on_a_small_sample():
    s = latency_stats([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s["latency_p50_ms"] == 3.0
    assert s["latency_p90_ms"] == pytest.approx(4.6)
    assert s["iqr_over_median"] == pytest.approx((4.0 - 2.0) / 3.0)
    assert s["noisy"] is True


def test_noise_flag_threshold():
    steady = latency_stats([1.0] * 50 + [1.01] * 50)
    assert steady["iqr_over_median"] < NOISE_THRESHOLD and steady["noisy"] is False


def test_empty_latencies_are_an_error():
    with pytest.raises(ValueError):
        latency_stats([])


def test_a_single_latency_has_no_standard_deviation():
    s = latency_stats([2.5])
    assert np.isnan(s["latency_std_ms"])  # undefined, not 0.0 (which would claim a perfectly steady case)
    assert s["latency_p50_ms"] == s["latency_mean_ms"] == 2.5
