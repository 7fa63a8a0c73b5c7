"""The framework-free timing loop, shared by our in-process runs and the peer workers so every side is timed alike."""
import math
import time

NOISY_SPREAD = 1.15  # rounds of one side further apart than this (fastest / slowest) make a number untrustworthy


def time_batches(step, iters=None, seconds=None):
    """Per-batch wall times (ms) of ``step()``, which must run one batch and block until its result is ready.

    Stops after ``iters`` batches or once ``seconds`` have passed, whichever comes first; always times at least one.
    """
    if iters is None and seconds is None:
        raise ValueError("give iters, seconds or both")
    latencies = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        step()
        latencies.append((time.perf_counter() - t0) * 1e3)
        if iters is not None and len(latencies) >= iters:
            break
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
    return latencies


def warm_up(step, n):
    """Runs ``n`` untimed batches (graph building, allocation, oneDNN primitive caches happen here)."""
    for _ in range(n):
        step()


def percentile(values, q):
    """Linear-interpolated percentile (numpy's default method), without needing numpy in the workers."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values):
    return percentile(values, 50)


def summarize(rounds, batch_size):
    """Statistics of alternating rounds (a list of per-batch latency lists, ms).

    Latency percentiles pool all timed batches; img/s is the median over rounds of each round's throughput, so one
    disturbed round (another process waking up) moves the reported number less. ``round_spread`` (fastest round /
    slowest round) shows how far the rounds disagree: above :data:`NOISY_SPREAD` the machine was not quiet enough.
    """
    pooled = [v for r in rounds for v in r]
    per_round = [batch_size * 1e3 * len(r) / sum(r) for r in rounds]
    return {
        "latency_ms": {"p50": percentile(pooled, 50), "p90": percentile(pooled, 90), "mean": sum(pooled) / len(pooled),
                       "min": min(pooled), "max": max(pooled)},
        "img_per_s": median(per_round),
        "rounds_img_per_s": per_round,
        "latencies_ms": rounds,
        "timed_batches": len(pooled),
        "round_spread": max(per_round) / min(per_round),
    }
