"""The machine-readable summary every benchmark prints as its last line, for run_all.py.

    BENCH {"benchmark": "startup", "rows": [{"row": ..., "value": ..., "unit": "s",
           "comparison": ..., "comparison_value": ..., "ratio": value / comparison_value}]}

``ratio`` < 1 means faster than the comparison when both are times (each row says what
its comparison is; it is measured side by side in the same run, or is a stated goal).
"""
from __future__ import annotations

import json

PREFIX = "BENCH "


def row(name: str, value: float, comparison: str, comparison_value: float, unit: str = "s") -> dict:
    ratio = value / comparison_value if comparison_value > 0 and value > 0 else float("nan")  # 0: not measured
    return {"row": name, "value": round(value, 6), "unit": unit, "comparison": comparison,
            "comparison_value": round(comparison_value, 6), "ratio": round(ratio, 4)}


def emit(benchmark: str, rows: list[dict], **extra) -> None:
    """Print the summary line (flushed: it must be the last line of stdout)."""
    print(PREFIX + json.dumps({"benchmark": benchmark, "rows": rows, **extra}, separators=(",", ":")), flush=True)


def parse(stdout: str) -> dict | None:
    """The summary of a benchmark's stdout, or None when it printed none."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX):])
    return None
