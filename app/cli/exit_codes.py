"""The ``robustdx`` command's exit codes, the same for every subcommand."""

OK = 0
#: A policy rule failed (the release gate says no), or evidence did not verify.
CHECK_FAILED = 1
#: The job failed or was cancelled.
JOB_FAILED = 2
#: Bad usage, a file that cannot be read, or the service cannot be reached.
USAGE_ERROR = 3
