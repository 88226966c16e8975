"""Fixtures shared across test modules: a real redis-server (installed when missing)."""

pytest_plugins = ("tests.redis_server",)
