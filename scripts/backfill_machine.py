"""Give committed bench runs from before runs recorded their machine the machine they ran on.

    python scripts/backfill_machine.py benchmarks/standard benchmarks/finetune benchmarks/cache [--write]

A run's ``summary.json`` records its machine now (:mod:`frostline.lab.machine`); older ones do not.
Their machine is still known from git: a session commits the runs it made together with the
report it wrote, and that report was stamped with the machine it was written on ("Machine: ...").
For each summary without a machine, this finds the last commit that changed it; if the suite's
``report.md`` changed in that same commit, the report's stamp there is the run's machine, recorded
with ``"source"`` saying it was inferred and from which commit. A summary whose commit did not
rewrite the report is left without one (the report then counts it as not recorded). Without
``--write`` it only prints what it would do.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

STAMP = re.compile(r"Machine: (?P<cpu>.+?) \((?P<cores>\d+) cores\)(?:, GPU (?P<gpu>[^;]+)|, no GPU); "
                   r"torch (?P<torch>[^,]+),")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def inferred_machine(summary: Path, report: Path) -> dict | None:
    commit = git("log", "-1", "--format=%h", "--", str(summary)).strip()
    if not commit:
        return None  # never committed: nothing to infer from
    if str(report) not in git("show", "--name-only", "--format=", commit).split():
        return None  # that commit kept an older report, possibly written elsewhere
    stamp = STAMP.search(git("show", f"{commit}:{report}"))
    if stamp is None:
        return None
    return {"cpu": stamp["cpu"], "cpu_cores": int(stamp["cores"]), "gpu": stamp["gpu"], "torch": stamp["torch"],
            "source": f"inferred: the report committed with this run ({commit}) was written on this machine"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench_dirs", nargs="+", type=Path)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    counts: dict[str, int] = {}
    if subprocess.run(["git", "rev-parse", "--git-dir"], capture_output=True).returncode != 0:
        sys.exit("run it from inside the repository's git checkout: the machines come from its history")
    for root in args.bench_dirs:
        if not (root / "cells").is_dir():
            sys.exit(f"{root} is not a bench folder (it has no cells/): pass e.g. benchmarks/standard")
        for path in sorted(root.glob("cells/*/*/*/seed*/summary.json")):
            if not re.fullmatch(r"seed\d+", path.parent.name):
                continue  # a run set aside (``seed0.superseded``): not in any report
            summary = json.loads(path.read_text())
            if summary.get("machine"):
                continue
            machine = inferred_machine(path, root / "report.md")
            key = f"{root}: " + (f"{machine['cpu']} ({machine['source'].split('(')[1].split(')')[0]})"
                                 if machine else "left unrecorded")
            counts[key] = counts.get(key, 0) + 1
            if machine and args.write:
                summary["machine"] = machine
                path.write_text(json.dumps(summary, indent=2) + "\n")
    for key, n in counts.items():
        print(f"{n:4d}  {key}")
    if not counts:
        print("every run there already records its machine: nothing to do")
    if counts and not args.write:
        print("(dry run: --write records them)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
