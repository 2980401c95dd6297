"""Fixtures of the log tests: a real redis-server for the Redis backend."""

from tests.support.redis import redis_server

__all__ = ["redis_server"]
