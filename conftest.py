"""Fixtures shared across test modules (a real redis-server), and the test tiers.

``./dev test`` runs everything. ``./dev test -m "not slow"`` is the fast tier for daily work:
the pure modules and the addon's hooks, well under a minute. A module is slow when it starts
real processes (claimgate, redis-server, a browser, load generators, validators): every
``test_e2e*`` module and the ones named here.
"""

import pytest

pytest_plugins = ("tests.redis_server", "tests.redis_sentinel", "tests.redis_cluster")

SLOW_MODULES = frozenset(
    {
        "test_bench",
        "test_clients",
        "test_demo",
        "test_deploy",
        "test_monitoring",
        "test_redis_cluster",
        "test_redis_sentinel",
        "test_soak",
        "test_status_page",
        "test_store_contract",
        "test_testing_process",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if module.startswith("test_e2e") or module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
