"""Plots and tables a person can open. Matplotlib runs headless (Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_timeline(summary: dict[str, Any], path: str | Path) -> Path:
    """One bar per unit (input at the top): trained from 0 until the fraction of training at
    which it froze; units never frozen run to the end. Like SmartFRZ's Fig. 5b."""
    units: Sequence[str] = summary["units"]
    frozen_at = summary.get("frozen_at") or {}
    done = summary.get("steps_done", summary.get("total_steps", 1)) / max(summary.get("total_steps", 1), 1)
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(units) + 1.6))
    for i, name in enumerate(units):
        t = frozen_at.get(name)
        end = t if t is not None else done
        ax.barh(i, end, color="#4a90d9" if t is not None else "#9bbbe0", height=0.7)
        if t is not None:
            ax.plot([t], [i], marker="|", color="#1b3d6d", markersize=12)
    ax.set_yticks(range(len(units)), labels=list(units), fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of training")
    saving = summary.get("flops_saved")
    title = f"{summary.get('method')} on {summary.get('model')}/{summary.get('dataset')}: when each unit froze"
    if saving is not None:
        title += f"\n(training FLOPs saved: {100 * saving:.1f}%)"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    out = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def runs_table(summaries: Sequence[dict[str, Any]]) -> str:
    """Side-by-side table of finished runs; time saved is against the ``none`` run of the same
    model and dataset when there is one."""
    baselines = {(s["model"], s["dataset"]): s for s in summaries if s["method"] == "none"}
    rows = []
    for s in summaries:
        base = baselines.get((s["model"], s["dataset"]))
        saved = f"{100 * (1 - s['train_time_s'] / base['train_time_s']):.1f}%" if base else "n/a"
        delta = f"{s['test_accuracy'] - base['test_accuracy']:+.2f}" if base else "n/a"
        frozen = sum(v is not None for v in s["frozen_at"].values())
        rows.append([s["method"], s["model"], s["dataset"], s["epochs"], s["seed"], f"{s['test_accuracy']:.2f}", delta,
                     f"{s['train_time_s']:.1f}", saved, f"{100 * s['flops_saved']:.1f}%",
                     f"{100 * s['predicted_saving']:.1f}%", f"{frozen}/{len(s['units'])}"])
    return markdown_table(["method", "model", "dataset", "epochs", "seed", "test acc %", "Δ acc", "train s",
                           "time saved", "FLOPs saved", "predicted", "frozen"], rows)
