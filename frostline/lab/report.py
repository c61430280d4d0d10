"""Plots and tables a person can open. Matplotlib runs headless (Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .machine import same_machine


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
    model and dataset when there is one, and, for runs made with ``--speed-probe``, also against the
    run's own full speed (``in_run_time_saved``, which the caller works out from its log)."""
    baselines = {(s["model"], s["dataset"]): s for s in summaries if s["method"] == "none"}
    own = any(s.get("in_run_time_saved") is not None for s in summaries)
    rows = []
    for s in summaries:
        base = baselines.get((s["model"], s["dataset"]))
        saved = ("n/a" if not base else "n/a (other machine)" if same_machine(s, base) is False
                 else f"{100 * (1 - s['train_time_s'] / base['train_time_s']):.1f}%")
        delta = f"{s['test_accuracy'] - base['test_accuracy']:+.2f}" if base else "n/a"
        frozen = sum(v is not None for v in s["frozen_at"].values())
        method = s["method"] + (f" (cooldown {s['cooldown']})" if s.get("cooldown") else "")  # runs may differ only there
        in_run = s.get("in_run_time_saved")
        rows.append([method, s["model"], s["dataset"], s["epochs"], s["seed"], f"{s['test_accuracy']:.2f}", delta,
                     f"{s['train_time_s']:.1f}", saved, *([("—" if in_run is None else f"{100 * in_run:.1f}%")] if own else []),
                     f"{100 * s['flops_saved']:.1f}%", f"{100 * s['predicted_saving']:.1f}%", f"{frozen}/{len(s['units'])}"])
    return markdown_table(["method", "model", "dataset", "epochs", "seed", "test acc %", "Δ acc", "train s",
                           "time saved", *(["vs own full speed"] if own else []), "FLOPs saved", "predicted", "frozen"], rows)


def cache_table(summaries: Sequence[dict[str, Any]]) -> str | None:
    """Per run with the activation cache's payoff rule (``--cache auto``), per frozen prefix it
    measured: what filling a sample costs against what each replay saves, the memory the boundary
    needs for the whole train set, and what was decided. None when no run has one."""
    rows = []
    for s in summaries:
        for b in ((s.get("cache") or {}).get("payoff") or ()):
            decided = (f"served from step {b['served_from_step']}" if "served_from_step" in b
                       else b.get("why") or b.get("waited", ""))
            measured = "write_us" in b
            rows.append([s["method"], s["model"], s["seed"], f"{s['units'][b['boundary'] - 1]} ({b['boundary']})",
                         f"{b['write_us']:.1f}" if measured else "—",
                         f"{b['compute_us'] - b['read_us']:.1f}" if measured else "—",
                         f"{b['memory_mb']:.0f}" if measured else "—", decided])
    if not rows:
        return None
    return markdown_table(["method", "model", "seed", "frozen up to", "fill µs/sample", "replay saves µs/sample",
                           "memory MB", "decision"], rows)


# -- bench compare plots ----------------------------------------------------------------------
def _pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both axes (more time saved and higher accuracy), left to right."""
    front = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return sorted(front)


def _groups(cells) -> list[tuple[str, str]]:
    return list(dict.fromkeys((c.dataset, c.model) for c in cells))


def read_summary(folder: str | Path) -> dict[str, Any]:
    """A finished run's ``summary.json``, or one clear error saying what is wrong with the folder."""
    import json

    from ..errors import FrostlineError

    path = Path(folder) / "summary.json"
    resume = (f": `frostline train --resume {folder}` goes on from its last checkpoint"
              if (Path(folder) / "checkpoint.pt").exists() or (Path(folder) / "checkpoint.prev.pt").exists() else "")
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        if resume:  # cut off before it could write its summary (killed)
            raise FrostlineError(f"{folder} holds a run that did not finish (no summary.json){resume}") from None
        raise FrostlineError(f"{path} does not exist: pass folders written by `frostline train`") from None
    except OSError as e:
        raise FrostlineError(f"{path} cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise FrostlineError(f"{path} is not valid JSON ({e}); re-run that training") from None
    if not isinstance(summary, dict):
        raise FrostlineError(f"{path} is not a run's summary (a JSON {type(summary).__name__}); re-run that training")
    if summary.get("status") != "finished":
        error = f", {summary['error']}" if summary.get("error") else ""
        raise FrostlineError(f"{path} is from a run that did not finish (status {summary.get('status')!r}{error})"
                             + (resume or ": report takes finished runs"))
    return summary


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    import json

    rows = []
    try:
        for line in (folder / "metrics.jsonl").read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    except OSError:
        pass
    return rows


def plot_bench(root: Path, cells, results: dict[str, dict], rows: Sequence[dict[str, Any]]) -> list[Path]:
    """The four figures of ``frostline bench compare`` (SmartFRZ Fig. 5a/5b style and two of ours)."""
    groups = _groups(cells)
    variants = list(dict.fromkeys(c.variant for c in cells))
    colors = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    written = []

    # accuracy vs time saved: one point per run (its own full-speed steps, or the same seed's baseline)
    from .compare import run_time_saved

    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], groups):
        points = []
        for c in cells:
            s, base = results.get(c.key), results.get(f"{dataset}/{model}/none/seed{c.seed}")
            if (c.dataset, c.model) != (dataset, model) or s is None or base is None:
                continue
            saved = run_time_saved(s, base)
            if saved is None:
                continue
            x, y = 100 * saved, s["test_accuracy"]
            points.append((x, y))
            ax.scatter([x], [y], color=colors[c.variant], s=22, label=c.variant)
        if points:
            fx, fy = zip(*_pareto(points))
            ax.plot(fx, fy, color="0.4", lw=1, ls="--", label="Pareto front")
        handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
        ax.legend(handles.values(), handles.keys(), fontsize=7)
        ax.set_xlabel("training time saved vs none (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{model} on {dataset}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, root / "accuracy_vs_time_saved.png"))

    # when each unit froze, seed 0, one panel per variant and group
    freezing = [v for v in variants if v != "none"]
    fig, axes = plt.subplots(len(groups), max(len(freezing), 1), figsize=(2.6 * max(len(freezing), 1), 2.8 * len(groups)),
                             squeeze=False)
    for row, (dataset, model) in zip(axes, groups):
        for ax, variant in zip(row, freezing):
            s = results.get(f"{dataset}/{model}/{variant}/seed0")
            ax.set_title(f"{variant}\n{model}/{dataset}", fontsize=7)
            if s is None:
                ax.axis("off")
                continue
            units = s["units"]
            for i, name in enumerate(units):
                t = s["frozen_at"].get(name)
                ax.barh(i, t if t is not None else 1.0, color="#4a90d9" if t is not None else "#c9d9ee", height=0.7)
            ax.set_yticks(range(len(units)), labels=units, fontsize=5)
            ax.invert_yaxis()
            ax.set_xlim(0, 1)
            ax.tick_params(axis="x", labelsize=6)
    fig.supxlabel("fraction of training at which the unit froze (pale: never)", fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, root / "freezing_moments.png"))

    # memory over training, seed 0: activations kept for backward, and the process's memory
    fig, axes = plt.subplots(2, len(groups), figsize=(5.2 * len(groups), 6), squeeze=False)
    for col, (dataset, model) in enumerate(groups):
        for variant in variants:
            folder = next((c.folder(root) for c in cells if (c.dataset, c.model, c.variant, c.seed) == (dataset, model, variant, 0)), None)
            steps = [r for r in read_metrics(folder) if r.get("kind") == "step" and "saved_activations_mb" in r] if folder else []
            if not steps:
                continue
            xs = [r["fraction"] for r in steps]
            axes[0][col].plot(xs, [r["saved_activations_mb"] for r in steps], color=colors[variant], label=variant, lw=1.2)
            axes[1][col].plot(xs, [r["memory_mb"] for r in steps], color=colors[variant], label=variant, lw=1.2)
        axes[0][col].set_title(f"{model} on {dataset}", fontsize=10)
        axes[0][col].set_ylabel("saved for backward (MB)")
        axes[1][col].set_ylabel("process / device memory (MB)")
        axes[1][col].set_xlabel("fraction of training")
        if axes[0][col].get_legend_handles_labels()[0]:
            axes[0][col].legend(fontsize=7)
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, root / "memory.png"))

    # predicted vs measured saving
    fig, ax = plt.subplots(figsize=(5, 4.6))
    markers = dict(zip(dict.fromkeys(m for _, m in groups), "osD^v<>p"))
    for r in rows:
        if r["method"] == "none":
            continue
        ax.scatter([100 * _predicted(r)], [100 * r["time_saved"]], color=colors[r["variant"]], label=r["variant"],
                   marker=markers[r["model"]], s=26)
    lim = max([5.0] + [100 * max(_predicted(r), r["time_saved"]) for r in rows if r["method"] != "none"
                       and r["time_saved"] == r["time_saved"]]) * 1.1
    ax.plot([0, lim], [0, lim], color="0.5", lw=1, ls=":", label="measured = predicted")
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
    ax.legend(handles.values(), handles.keys(), fontsize=7)
    ax.set_xlabel("predicted saving (%): time-calibrated, or FLOPs for runs without a profile")
    ax.set_ylabel("measured time saved (%)")
    ax.set_title("estimator vs clock (mean over seeds; marker: " + ", ".join(f"{m} {k}" for k, m in markers.items()) + ")", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, root / "predicted_vs_measured.png"))
    return written


def _predicted(r: dict) -> float:
    t = r.get("predicted_time_saving", float("nan"))
    return t if t == t else r["predicted_saving"]


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
