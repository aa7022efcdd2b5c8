"""schemathesis hooks for the OpenAPI fuzz run: job submissions name the run's real model
and dataset, so generated attack parameters, analyses and policies reach the API's own
validation instead of stopping at 404. Read by the ``st`` process (``hooks`` in its
config); the ids come in ``ROBUSTDX_FUZZ_IDS``."""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis

_IDS: dict[str, str] = json.loads(os.environ.get("ROBUSTDX_FUZZ_IDS", "{}"))
_FIELDS = {"model_id": "model_id", "dataset_id": "dataset_id",
           "train_dataset_id": "dataset_id", "eval_dataset_id": "dataset_id"}


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    operation = context.operation
    if operation is None or operation.method.upper() != "POST" or \
            operation.path not in ("/v1/audits", "/v1/defenses") or not isinstance(body, dict):
        return body
    # Only string ids are replaced: a case made invalid by an id of the wrong type stays
    # invalid, so the negative checks keep their meaning.
    return {key: _IDS[_FIELDS[key]] if key in _FIELDS and isinstance(value, str) else value
            for key, value in body.items()}
