"""The machine a run trained on, recorded in its summary.

A bench gathers runs made over several sessions, and sessions do not always get the same
machine. Wall-clock times are only comparable between runs of one machine, so each run records
where it ran; a report then says which machines its runs came from (instead of stamping the
machine it was written on) and pairs two runs' clocks only when they ran on the same one.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows where that is missing."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def this_machine(device=None) -> dict[str, Any]:
    """What a run records: the CPU, its cores, the GPU it trained on (if any), torch's version."""
    import torch

    device = torch.device(device) if device is not None else None
    gpu = None
    if device is not None and device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
    return {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__}


def label(machine: dict[str, Any]) -> str:
    """``AMD EPYC (2 cores), no GPU``: how reports name a machine."""
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
    cpu = re.sub(r"\s*\((R|TM)\)", "", machine["cpu"], flags=re.IGNORECASE)  # Intel(R) Xeon(R) -> Intel Xeon
    return f"{cpu} ({machine['cpu_cores']} cores){gpu}"


def slug(machine: dict[str, Any]) -> str:
    """``intel-xeon-processor-2-cores-no-gpu``: a machine's label as a folder name."""
    return re.sub(r"[^a-z0-9]+", "-", label(machine).lower()).strip("-")


def same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    """Whether two run summaries trained on the same machine; None when either did not record it
    (runs made before runs recorded their machine)."""
    ma, mb = a.get("machine"), b.get("machine")
    if not ma or not mb:
        return None
    return label(ma) == label(mb)


def machine_counts(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Which machines a set of runs trained on: runs per machine, how many of those machines were
    inferred after the fact (``scripts/backfill_machine.py``), how many runs recorded none."""
    runs: dict[str, int] = {}
    for s in summaries:
        if s.get("machine"):
            runs[label(s["machine"])] = runs.get(label(s["machine"]), 0) + 1
    return {"runs": dict(sorted(runs.items(), key=lambda kv: -kv[1])),
            "inferred": sum(bool((s.get("machine") or {}).get("source")) for s in summaries),
            "unrecorded": sum(not s.get("machine") for s in summaries)}


def machines_text(counts: dict[str, Any], brief: bool = False) -> str:
    """``counts`` (:func:`machine_counts`) for a report's header, or ``brief`` for a summary line."""
    def runs(n: int) -> str:
        return f"{n} run{'s' if n != 1 else ''}"

    if brief:
        parts = [f"{name.split(' (')[0]} ×{n}" for name, n in counts["runs"].items()]
        return ", ".join(parts + ([f"unrecorded ×{counts['unrecorded']}"] if counts["unrecorded"] else [])) or "no runs"
    parts = [f"{name} ({runs(n)})" for name, n in counts["runs"].items()]
    if counts["inferred"]:
        one = counts["inferred"] == 1
        parts.append(f"the machine{'' if one else 's'} of {runs(counts['inferred'])} {'is' if one else 'are'} inferred "
                     f"from the report{'' if one else 's'} committed with {'it' if one else 'them'} "
                     "(`scripts/backfill_machine.py`)")
    if counts["unrecorded"]:
        parts.append(f"not recorded for {runs(counts['unrecorded'])} (made before runs recorded their machine)")
    return "; ".join(parts) if parts else "no finished runs"
