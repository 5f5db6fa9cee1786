"""The demo's one page, ``report.html``, and its closing text summary.

The page links everything a person opens after ``make demo``: the commands as typed, each
model's score at its best threshold and with a fitted box scale, the ensemble's at the given
threshold and fitted on the same images (separate, named columns), threshold curves and
box-error plots, the gallery, the TensorBoard command and the time of each stage. Paths are
relative to the report, so the folder can be moved.
"""
from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path

from tfod.progress import format_number

PLOTS = ("threshold_curve.png", "box_scale_curve.png", "box_errors.png")


def _link(report: Path, target: Path, text: str | None = None) -> str:
    relative = os.path.relpath(target, report.parent)
    return f'<a href="{html.escape(relative)}">{html.escape(text or relative)}</a>'


def _image(report: Path, target: Path, alt: str) -> str:
    if not target.exists():
        return ""
    relative = html.escape(os.path.relpath(target, report.parent))
    return f'<img src="{relative}" alt="{html.escape(alt)}" loading="lazy">'


def score_rows(summary: Mapping) -> list[tuple[str, dict]]:
    """(name, metrics.json) of each scored detections file: the models, then the submission."""
    return list(summary["scores"].items())


def _scores_table(summary: Mapping) -> str:
    rows = []
    for name, metrics in score_rows(summary):
        fitted = metrics.get("fitted") or {}
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{format_number(metrics.get('score'))}</td>"
            f"<td>{format_number(metrics.get('threshold'), 2)}</td>"
            f"<td>{format_number(fitted.get('score'))}</td>"
            f"<td>{format_number(fitted.get('box_scale'), 2)}</td>"
            f"<td>{metrics.get('images_scored', metrics.get('images_total', ''))}</td></tr>")
    return ("<table><tr><th>detections</th><th>score at its best threshold</th><th>threshold</th>"
            "<th>score with fitted box scale</th><th>fitted box scale</th><th>images</th></tr>"
            + "".join(rows) + "</table>")


def _ensemble_block(summary: Mapping) -> str:
    ensemble = summary.get("ensemble") or {}
    given, fitted = ensemble.get("given") or {}, ensemble.get("fitted") or {}
    chosen = {**(fitted.get("params") or {}), "threshold": fitted.get("threshold"),
              "box_scale": fitted.get("box_scale")}
    items = "".join(f"<li><code>{html.escape(str(k))}</code> = {html.escape(str(v))}</li>"
                    for k, v in chosen.items())
    return ("<h2>Ensemble</h2><p>Fusion with default parameters at the given threshold: score "
            f"{format_number(given.get('score'))}; with weights, IoU, threshold and box scale "
            f"fitted on the same images: score {format_number(fitted.get('score'))}. "
            "Fitted values:</p>"
            f"<ul>{items}</ul>")


def _stages_table(summary: Mapping) -> str:
    rows = "".join(
        f"<tr><td>{i}</td><td>{html.escape(stage['name'])}</td>"
        f"<td><code>{html.escape(stage['command'])}</code></td><td>{stage['seconds']:.1f}</td></tr>"
        for i, stage in enumerate(summary["stages"], 1))
    return ("<table><tr><th>#</th><th>stage</th><th>command</th><th>seconds</th></tr>" + rows
            + f"<tr><td></td><td>total</td><td></td><td>{summary['seconds']:.1f}</td></tr></table>")


def _plots(plan, report: Path, summary: Mapping) -> str:
    blocks = []
    for name, _ in score_rows(summary):
        folder = plan.metrics_dir(name)
        images = "".join(_image(report, folder / plot, f"{name} {plot}") for plot in PLOTS)
        blocks.append(f"<h3>{html.escape(name)}</h3><div class=plots>{images}</div>")
    curve = plan.ensemble_dir / "threshold_curves.png"
    if curve.exists():
        blocks.append("<h3>ensemble fit</h3><div class=plots>"
                      + _image(report, curve, "ensemble threshold curve") + "</div>")
    return "".join(blocks)


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}
code{font-size:90%}.plots img{width:380px;margin:4px;border:1px solid #ddd}
.note{background:#fff6d5;padding:8px;border-left:4px solid #e0b000}"""


def write_report(plan, summary: Mapping) -> Path:
    """Write ``plan.report`` and return its path."""
    report = plan.report
    gallery = plan.metrics_dir("submission") / "gallery" / "index.html"
    runs = " ".join(str(plan.run_dir(d)) for d in plan.detectors)
    note = ("The models were trained and are scored on the same images (fold -1): this shows "
            "that boxes survive every stage in the right place, not that the models generalize."
            if plan.fold < 0 else f"Scored on fold {plan.fold}, which the models did not train on.")
    body = [
        "<h1>tfod demo</h1>", f"<p class=note>{html.escape(note)}</p>",
        "<h2>Scores</h2>", _scores_table(summary), _ensemble_block(summary),
        f"<p>Submission: {_link(report, plan.submission)} &middot; gallery of the submission: "
        f"{_link(report, gallery, 'gallery/index.html')}</p>",
        f"<p>TensorBoard: <code>tensorboard --logdir_spec "
        f"{html.escape(','.join(f'{d.name}:{plan.run_dir(d)}' for d in plan.detectors))}</code>"
        f"</p><p>Run folders: <code>{html.escape(runs)}</code></p>",
        "<h2>Stages</h2>", _stages_table(summary), "<h2>Curves and box errors</h2>",
        _plots(plan, report, summary),
    ]
    report.write_text("<!doctype html><html><head><meta charset=utf-8><title>tfod demo</title>"
                      f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    return report


def text_summary(plan, summary: Mapping) -> str:
    """The lines printed at the end of the demo."""
    lines = ["", f"== tfod demo: done in {summary['seconds']:.0f} s"]
    for name, metrics in score_rows(summary):
        fitted = (metrics.get("fitted") or {}).get("score")
        score = format_number(metrics.get("score"))
        lines.append(f"  {name:<28} score {score} at its best threshold"
                     + (f", {format_number(fitted)} with fitted box scale"
                        if fitted is not None else ""))
    lines += [f"  submission: {plan.submission}", f"  report:     {plan.report}"]
    return "\n".join(lines)
