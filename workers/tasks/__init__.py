"""Celery tasks. Each is idempotent, keyed by job id (and shard index)."""
