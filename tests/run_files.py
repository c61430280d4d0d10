"""Reading a run's files while the run still writes them (tests that stop a run part-way)."""

import json


def last_step(metrics) -> int:
    """The step of the last complete line of a ``metrics.jsonl`` being written (0 before there is
    one): a line still being written is not read."""
    if not metrics.exists():
        return 0
    text = metrics.read_text()
    lines = text.splitlines()[:None if text.endswith("\n") else -1]
    return json.loads(lines[-1]).get("step", 0) if lines else 0
