"""Run reports: plots of a run's metrics.jsonl (PNG) and a one-page report.html; run status."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bertpre.training.run_directory import RUN_CONFIG_FILE, list_checkpoints
from bertpre.core.errors import BertpreError
from bertpre.core.metrics_log import METRICS_FILE, read_metrics

_PANELS = [  # (title, [(metric key, label)], y-axis label, x-axis key)
    ("Loss", [("mlm_loss", "MLM (train)"), ("eval_mlm_loss", "MLM (eval)"), ("nsp_loss", "NSP (train)")], "loss", "step"),
    ("Accuracy", [("mlm_accuracy", "MLM (train)"), ("eval_mlm_accuracy", "MLM (eval)"),
                  ("eval_nsp_accuracy", "NSP (eval)")], "accuracy", "step"),
    ("Time to accuracy", [("eval_mlm_accuracy", "MLM (eval)")], "held-out MLM accuracy", "elapsed_seconds"),
    ("Learning rate", [("learning_rate", "learning rate")], "learning rate", "step"),
    ("Throughput", [("tokens_per_second", "tokens/s")], "tokens / second", "step"),
]
_AXIS_NAMES = {"step": "step", "elapsed_seconds": "wall time (s)"}


def plot_metrics(run: str | Path) -> Path:
    """Write ``training.png`` (loss, accuracy, learning rate, throughput against steps) beside metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run)
    lines = read_metrics(run / METRICS_FILE)
    figure, axes = plt.subplots(2, 3, figsize=(16, 8), constrained_layout=True)
    for axis, (title, series, ylabel, x_key) in zip(axes.flat, _PANELS):
        for key, label in series:
            points = [(m[x_key], m[key]) for m in lines if key in m and x_key in m]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=label)
        axis.set_title(title)
        axis.set_xlabel(_AXIS_NAMES[x_key])
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    for axis in list(axes.flat)[len(_PANELS):]:
        axis.axis("off")
    figure.suptitle(f"bertpre run: {run.name}")
    output = run / "training.png"
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def write_report(run: str | Path, title: str = "bertpre run report", extra: Optional[dict[str, str]] = None) -> Path:
    """A self-contained report.html: the plots, the last metrics and the newest checkpoint."""
    run = Path(run)
    image = plot_metrics(run)
    status = run_status(run)
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_format(v))}</td></tr>"
                   for k, v in {**status.summary(), **(extra or {})}.items())
    encoded = base64.b64encode(image.read_bytes()).decode()
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:4px 12px;border-bottom:1px solid #ddd}}
img{{max-width:100%}}</style></head><body><h1>{html.escape(title)}</h1>
<table>{rows}</table><h2>Training curves</h2><img alt="training curves" src="data:image/png;base64,{encoded}">
<p>Logs for TensorBoard: <code>tensorboard --logdir {html.escape(str(run))}</code></p></body></html>"""
    output = run / "report.html"
    output.write_text(page, encoding="utf-8")
    return output


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class RunStatus:
    """What a run directory holds: its checkpoints, its latest metrics, whether it can resume."""

    run: Path
    checkpoints: list[Path]
    last_train: dict[str, Any]
    last_eval: dict[str, Any]
    milestones: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Key facts, for tables."""
        facts: dict[str, Any] = {"run": str(self.run), "checkpoints": len(self.checkpoints)}
        if self.checkpoints:
            facts["newest checkpoint"] = self.checkpoints[-1].name
            facts["resumable"] = "yes (resume: auto continues from the newest checkpoint)"
        else:
            facts["resumable"] = "no checkpoint yet"
        if not self.last_train:
            facts["progress"] = "started: no step logged yet"
        for key in ("step", "tokens_seen", "mlm_loss", "nsp_loss", "mlm_accuracy", "learning_rate",
                    "tokens_per_second"):
            if key in self.last_train:
                facts[key] = self.last_train[key]
        for key, value in self.last_eval.items():
            if key.startswith("eval_"):
                facts[key] = value
        for milestone in self.milestones:
            facts[f"MLM acc ≥ {milestone['mlm_accuracy_milestone']:.0%}"] = (
                f"{milestone['elapsed_seconds']:.0f} s, {milestone['tokens_seen']:,} tokens, step {milestone['step']:,}")
        return facts

    def table(self) -> str:
        """Human-readable status."""
        lines = [f"{k:<18} {_format(v)}" for k, v in self.summary().items()]
        lines += [f"  {c.name}" for c in self.checkpoints]
        return "\n".join(lines)


def run_status(run: str | Path) -> RunStatus:
    """Inspect a pretraining run directory."""
    run = Path(run)
    if not run.is_dir():
        raise BertpreError(f"{run}: no such run directory")
    metrics = read_metrics(run / METRICS_FILE) if (run / METRICS_FILE).exists() else []
    train = [m for m in metrics if "mlm_loss" in m]
    evaluation = [m for m in metrics if "eval_mlm_loss" in m]
    if not metrics and not list_checkpoints(run) and not (run / RUN_CONFIG_FILE).is_file():
        raise BertpreError(f"{run}: not a bertpre run (no metrics.jsonl, no checkpoints)")
    milestones = [m for m in metrics if "mlm_accuracy_milestone" in m]
    return RunStatus(run, list_checkpoints(run), train[-1] if train else {}, evaluation[-1] if evaluation else {},
                     milestones)
