"""The JSON report (``--json FILE``) and its versioned JSON Schema (report.schema.json, beside this file)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _finite(value: Any) -> Any:
    """JSON has no inf/NaN: they become null (the schema documents where null means infinite)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(_finite(report), indent=2, allow_nan=False) + "\n"
