"""The RobustDx exception tree. Every domain error is one of these; the HTTP layer maps them
to status codes in one table (``app/api/errors.py``), and third-party errors are converted at
the boundary with ``raise ... from exc``.

::

    RobustDxError
    ├── InvalidInputError                 bad request content (422)
    │   ├── InvalidImageError             undecodable / unsupported image (415)
    │   ├── ImageTooLargeError            pixel or byte limits (413)
    │   ├── InvalidModelFileError         unreadable model, wrong outputs, NaNs (422)
    │   │   ├── UnsafeModelFileError      needs code to load, or calls refused operators (422)
    │   │   └── ModelLimitError           the upload check ran past a CPU/wall/memory limit (422)
    │   ├── InvalidCardError              model card invalid (422)
    │   ├── InvalidDatasetError           bad archive or labels (422)
    │   ├── LabelMismatchError            dataset labels vs model card (422)
    │   └── InvalidParametersError        attack / analysis / defense parameters (422)
    │       └── BudgetExceededError       estimated cost over the tenant's limit (422)
    ├── PayloadTooLargeError              upload over its limit (413)
    ├── AuthenticationError               no key or a wrong key (401)
    ├── NotFoundError                     unknown id, or another tenant's (404)
    ├── ConflictError                     state does not allow it (409)
    ├── RateLimitedError                  too much at once; retry after ``retry_after`` s (429)
    ├── JobCancelledError                 raised inside workers when a job is cancelled
    ├── ServiceUnavailableError           a dependency is down (503)
    ├── RemoteModelError                  a remote model's endpoint failed or misanswered (502)
    └── QueryBudgetExceededError          a remote audit used up its query budget (429)
"""

from __future__ import annotations

from typing import Any


class RobustDxError(Exception):
    """Base class. ``code`` is a stable machine-readable name; ``details`` is JSON-able."""

    code = "robustdx_error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}


class InvalidInputError(RobustDxError):
    code = "invalid_input"


class InvalidImageError(InvalidInputError):
    code = "invalid_image"


class ImageTooLargeError(InvalidInputError):
    code = "image_too_large"


class InvalidModelFileError(InvalidInputError):
    code = "invalid_model_file"


class UnsafeModelFileError(InvalidModelFileError):
    code = "unsafe_model_file"


class ModelLimitError(InvalidModelFileError):
    """Loading or dry-running an upload went past one of its sandbox limits.

    ``details``: ``limit`` (``"cpu_time"``, ``"wall_time"`` or ``"memory"``), ``value`` and
    ``unit`` (``"s"`` or ``"bytes"``).
    """

    code = "model_limit_exceeded"


class InvalidCardError(InvalidInputError):
    code = "invalid_card"


class InvalidDatasetError(InvalidInputError):
    code = "invalid_dataset"


class LabelMismatchError(InvalidInputError):
    code = "label_mismatch"


class InvalidParametersError(InvalidInputError):
    code = "invalid_parameters"


class BudgetExceededError(InvalidParametersError):
    """The request's estimated cost is over a limit; ``details`` carry the estimate."""

    code = "budget_exceeded"


class PayloadTooLargeError(RobustDxError):
    code = "payload_too_large"


class AuthenticationError(RobustDxError):
    code = "unauthenticated"


class NotFoundError(RobustDxError):
    code = "not_found"


class ConflictError(RobustDxError):
    code = "conflict"


class RateLimitedError(RobustDxError):
    """Over a rate or concurrency limit; the same request may succeed ``retry_after``
    seconds later (whole seconds, at least 1)."""

    code = "rate_limited"

    def __init__(
        self, message: str, retry_after: float, details: dict[str, Any] | None = None
    ) -> None:
        self.retry_after = max(1, int(-(-retry_after // 1)))  # ceil, and never 0
        super().__init__(message, {**(details or {}), "retry_after": self.retry_after})


class JobCancelledError(RobustDxError):
    code = "cancelled"


class ServiceUnavailableError(RobustDxError):
    code = "service_unavailable"


class RemoteModelError(RobustDxError):
    code = "remote_model_error"


class QueryBudgetExceededError(RobustDxError):
    code = "query_budget_exceeded"
