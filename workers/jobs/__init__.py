"""Job bookkeeping inside workers: state, progress, heartbeats and cancellation."""

from workers.jobs.context import JobContext, ShardLease

__all__ = ["JobContext", "ShardLease"]
