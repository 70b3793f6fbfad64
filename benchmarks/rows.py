"""What every benchmark does with a measured row: stamp the load averages around it, print it."""

from __future__ import annotations

import json
import os


def emit(row: dict, load_start: float, as_json: bool, table_line) -> dict:
    """Add ``load_start``/``load_end`` (1-minute load averages) to ``row`` and print it: one JSON object when
    ``as_json``, else ``table_line(row)`` (a Markdown table row). A figure taken at load >= 1.5 is provisional."""
    row["load_start"] = round(load_start, 2)
    row["load_end"] = round(os.getloadavg()[0], 2)
    row["provisional"] = max(row["load_start"], row["load_end"]) >= 1.5
    print(json.dumps(row) if as_json else table_line(row), flush=True)
    return row
