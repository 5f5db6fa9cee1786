"""Pictures of a scoring run: curves, box-error histograms and the validation gallery.

Plots use matplotlib's Agg backend (no display needed). The gallery draws each image's
predicted boxes in green with their score and its ground truth in black (with a thin white
edge, to stand out on dark lung fields) on the X-ray, one
JPEG per image, and lists them worst first in an ``index.html`` with filters for false
positives and misses. This module only draws what :mod:`tfod.scoring.stage` computed.
"""
from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from tqdm import tqdm  # noqa: E402

from tfod import boxes as box_ops  # noqa: E402
from tfod.data import dicom  # noqa: E402
from tfod.runfolder import atomic_write  # noqa: E402

PREDICTED_COLOUR = (0, 200, 0)
TRUTH_COLOUR = (0, 0, 0)
GALLERY_SIZE = 512  # pixels of the longer side of a gallery image
JPEG_QUALITY = 85


def _save(figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _curve(x, y, chosen_x: float, chosen_y: float | None, xlabel: str, title: str, path) -> Path:
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(x, y, color="tab:blue")
    if chosen_y is not None and np.isfinite(chosen_y):
        axes.plot([chosen_x], [chosen_y], "o", color="tab:red",
                  label=f"chosen {chosen_x:.2f}: {chosen_y:.4f}")
        axes.axvline(chosen_x, color="tab:red", linestyle=":", linewidth=1)
        axes.legend(loc="lower center")
    axes.set(xlabel=xlabel, ylabel="competition score", title=title)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_threshold_curve(min_scores, scores, threshold: float, score: float | None, path) -> Path:
    """The score against the minimum detection score, the chosen threshold marked."""
    return _curve(min_scores, scores, threshold, score, "minimum detection score",
                  "Score against detection threshold", path)


def plot_box_scale_curve(scales, scores, scale: float, path) -> Path:
    """The score against the box-scaling factor, the chosen scale marked."""
    scales, scores = np.asarray(scales), np.asarray(scores)
    at_scale = scores[np.isclose(scales, scale)]
    chosen = float(at_scale[0]) if len(at_scale) else None
    return _curve(scales, scores, scale, chosen, "box scale (about the centre)",
                  "Score against box scale", path)


def plot_box_errors(errors: Mapping[str, np.ndarray], path) -> Path:
    """Histograms of the matched pairs' size ratios and centre offsets, medians marked."""
    titles = {"width_ratio": "width predicted / true", "height_ratio": "height predicted / true",
              "centre_dx": "centre offset x (pixels)", "centre_dy": "centre offset y (pixels)"}
    figure, grid = plt.subplots(2, 2, figsize=(8, 6))
    for axes, (name, title) in zip(grid.ravel(), titles.items(), strict=True):
        values = np.asarray(errors[name])
        values = values[np.isfinite(values)]
        if len(values):
            axes.hist(values, bins=40, color="tab:green", alpha=0.8)
            median = float(np.median(values))
            axes.axvline(median, color="black", linestyle="--", label=f"median {median:.3g}")
            axes.legend()
        else:
            axes.text(0.5, 0.5, "no matched pair", ha="center", va="center",
                      transform=axes.transAxes)
        axes.set_title(title)
    figure.suptitle(f"Matched pairs: {len(np.asarray(errors['width_ratio']))}")
    return _save(figure, path)


@dataclass(frozen=True)
class GalleryItem:
    """One image of the gallery: its boxes and how it scored (NaN = left out of the mean)."""

    patient_id: str
    score: float
    gt_boxes: np.ndarray
    pred_boxes: np.ndarray
    pred_scores: np.ndarray
    tp: int
    fp: int
    fn: int


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def draw_image(pixels: np.ndarray, item: GalleryItem, size: int = GALLERY_SIZE) -> Image.Image:
    """The X-ray with the true boxes in black and the predicted ones in green with scores."""
    image = Image.fromarray(pixels).convert("RGB")
    factor = size / max(image.size)
    image = image.resize((round(image.width * factor), round(image.height * factor)),
                         Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    font = _font(max(12, size // 32))
    line = max(2, size // 200)
    for box in box_ops.corners(box_ops.resize_xywh(item.gt_boxes, factor, factor)):
        halo = (box + np.array([-1, -1, 1, 1])).tolist()  # visible on the dark lung fields
        draw.rectangle(halo, outline=(255, 255, 255), width=1)
        draw.rectangle(box.tolist(), outline=TRUTH_COLOUR, width=line + 1)
    for box, score in zip(box_ops.corners(box_ops.resize_xywh(item.pred_boxes, factor, factor)),
                          item.pred_scores, strict=True):
        draw.rectangle(box.tolist(), outline=PREDICTED_COLOUR, width=line)
        draw.text((box[0] + line + 1, box[1] + line), f"{score:.2f}", fill=PREDICTED_COLOUR,
                  font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    return image


def _sorted_worst_first(items: Sequence[GalleryItem]) -> list[GalleryItem]:
    """By image score, lowest first; images left out of the mean (NaN) last."""
    return sorted(items, key=lambda item: (np.isnan(item.score), item.score, item.patient_id))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Validation gallery</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; width: {size}px; }}
figure img {{ width: {size}px; height: auto; display: block; }}
figcaption {{ font-size: 13px; }}
.filters button.on {{ font-weight: bold; }}
</style></head><body>
<h1>Validation gallery</h1>
<p>{summary} Ground truth in black, predictions in green with their score.
Sorted by image score, worst first.</p>
<p class="left-out">{left_out}</p>
<p class="filters">Show:
<button class="on" data-filter="all">all ({n_all})</button>
<button data-filter="fp">false positives ({n_fp})</button>
<button data-filter="fn">misses ({n_fn})</button></p>
<div class="grid">
{figures}
</div>
<script>
for (const button of document.querySelectorAll(".filters button")) {{
  button.addEventListener("click", () => {{
    const filter = button.dataset.filter;
    for (const b of document.querySelectorAll(".filters button")) b.classList.remove("on");
    button.classList.add("on");
    for (const figure of document.querySelectorAll("figure")) {{
      const show = filter === "all" || figure.dataset[filter] === "1";
      figure.style.display = show ? "" : "none";
    }}
  }});
}}
</script>
</body></html>
"""

_FIGURE = """<figure data-fp="{has_fp}" data-fn="{has_fn}" data-score="{score}">
<a href="{image}"><img src="{image}" alt="{patient_id}" loading="lazy"></a>
<figcaption><b>{score_text}</b> {patient_id}<br>tp {tp} &middot; fp {fp} &middot; fn {fn}
(IoU 0.5)</figcaption></figure>"""


def _figure(item: GalleryItem, image_name: str) -> str:
    score_text = "left out" if np.isnan(item.score) else f"{item.score:.3f}"
    return _FIGURE.format(
        has_fp=int(item.fp > 0), has_fn=int(item.fn > 0), score=html.escape(score_text),
        image=html.escape(image_name), patient_id=html.escape(item.patient_id),
        score_text=html.escape(score_text), tp=item.tp, fp=item.fp, fn=item.fn,
    )


def _draw_one(item: GalleryItem, dicom_dir, output_dir: Path, size: int) -> str | None:
    """Draw ``item`` into ``output_dir/<id>.jpg``; the reason when it cannot be drawn."""
    path = Path(dicom_dir) / f"{item.patient_id}.dcm"
    if not path.is_file():
        return f"no DICOM file {path}"
    try:
        pixels = dicom.load_image_8bit(path)
    except (ValueError, OSError) as error:  # DicomError (truncated, foreign...) is a ValueError
        return getattr(error, "reason", str(error))
    draw_image(pixels, item, size).save(output_dir / f"{item.patient_id}.jpg",
                                        quality=JPEG_QUALITY)
    return None


def write_gallery(items: Sequence[GalleryItem], dicom_dir, output_dir,
                  limit: int | None = None, size: int = GALLERY_SIZE) -> dict:
    """Draw ``items`` (the ``limit`` worst; None: all) from ``dicom_dir/<id>.dcm``.

    Writes ``<id>.jpg`` per image and ``index.html`` into ``output_dir``; the page says how
    many images the limit left out (``left_out`` in the summary). An image whose DICOM
    is missing or unreadable (truncated, foreign) is not drawn and the others still are: the
    returned summary counts the missing DICOMs and maps each image not drawn to its reason
    (``not_drawn``, also written to ``not_drawn.json``).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    chosen = _sorted_worst_first(items)[:limit]
    left_out = len(items) - len(chosen)
    drawn, not_drawn = [], {}
    for item in tqdm(chosen, desc="gallery", unit="image", disable=len(chosen) < 50):
        reason = _draw_one(item, dicom_dir, output_dir, size)
        if reason is None:
            drawn.append(item)
        else:
            not_drawn[item.patient_id] = reason
    figures = "\n".join(_figure(item, f"{item.patient_id}.jpg") for item in drawn)
    summary = f"{len(drawn)} images."
    if not_drawn:
        summary += f" {len(not_drawn)} not drawn (see not_drawn.json): " + html.escape(
            "; ".join(f"{key}: {reason}" for key, reason in list(not_drawn.items())[:5]))
    index = output_dir / "index.html"
    left_out_line = (f"{left_out} images are left out: the page shows the "
                     f"{len(chosen)} worst of {len(items)} (--gallery_limit)." if left_out else "")
    index.write_text(_PAGE.format(
        size=size // 2, summary=summary, left_out=left_out_line, n_all=len(drawn),
        figures=figures,
        n_fp=sum(item.fp > 0 for item in drawn), n_fn=sum(item.fn > 0 for item in drawn),
    ))
    missing = sum(reason.startswith("no DICOM file") for reason in not_drawn.values())
    if not_drawn:
        with atomic_write(output_dir / "not_drawn.json") as stream:
            stream.write(json.dumps(not_drawn, indent=1))
    return {"index": str(index), "images": len(drawn), "left_out": left_out,
            "missing_dicoms": missing, "not_drawn": not_drawn}
