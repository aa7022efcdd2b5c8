from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter

router = APIRouter(prefix="/v1/schemas", tags=["schemas"])
REPORT_SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "report.schema.json"


@router.get("/report", summary="JSON Schema of the audit report (draft 2020-12)")
def report_schema() -> dict[str, Any]:
    return dict(json.loads(REPORT_SCHEMA_FILE.read_text()))
