"""The soak in its short form: a real claimgate's memory levels off under steady traffic.

The long form (``./dev soak``, 50,000 requests) is recorded in docs/performance.md.
"""

from benchmarks.soak import run_soak


def test_memory_levels_off_under_steady_traffic():
    samples = run_soak(requests=3000, samples=6, clients=4, reconnect=250)
    assert [s.requests for s in samples][-1] == 3000
    warm = samples[2].rss_mb  # after 1,000 requests: caches and pools have filled
    grown = samples[-1].rss_mb - warm
    assert grown < 8, f"RSS grew {grown:.1f} MB over the last 2,000 requests: {samples}"
