"""Job bookkeeping inside workers: state, progress, heartbeats, cancellation and shards."""

from workers.jobs.context import CANCELLING, JobContext, JobTimeLimitError, redact_paths
from workers.jobs.shards import ShardLease, insert_shards

__all__ = [
    "CANCELLING", "JobContext", "JobTimeLimitError", "ShardLease", "insert_shards",
    "redact_paths",
]
