"""What an image model adds to the evaluation report: per-class metrics, the training curve
and the misclassified test images themselves, inline (the report stays one offline file)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from ferry.evaluation.plots import to_png
from ferry.evaluation.report import Evaluation
from ferry.vision.data import ImageSet

MAX_SHOWN = 24
THUMBNAIL = 72  # pixels: small images are enlarged with hard edges so each pixel stays visible


def per_class(confusion: list[list[int]], classes: list[str]) -> list[dict[str, float | str]]:
    """Precision, recall, F1 and support of each class from the confusion matrix."""
    matrix = np.asarray(confusion, dtype=np.float64)
    hits, predicted, actual = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
    rows: list[dict[str, float | str]] = []
    for i, name in enumerate(classes):
        precision = hits[i] / predicted[i] if predicted[i] else float("nan")
        recall = hits[i] / actual[i] if actual[i] else float("nan")
        f1 = 2 * hits[i] / (predicted[i] + actual[i]) if predicted[i] + actual[i] else float("nan")
        rows.append(
            {
                "class": name,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": int(actual[i]),
            }
        )
    return rows


def add_image_sections(
    report_html: Path,
    evaluation: Evaluation,
    history: list[dict[str, float]],
    test: ImageSet,
    proba: np.ndarray,
) -> None:
    """Append the image sections to a report ``write_report`` produced."""
    sections = (
        _section("Per-class metrics (test data)", _per_class_table(evaluation, test.classes))
        + _section("Training", _image(to_png(history_figure(history)), "training curve"))
        + _section("Misclassified test images", _misclassified(test, proba))
    )
    text = report_html.read_text(encoding="utf-8")
    report_html.write_text(text.replace("</main>", sections + "</main>", 1), encoding="utf-8")


def _section(title: str, body: str) -> str:
    anchor = title.split()[0].lower()
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


def _per_class_table(evaluation: Evaluation, classes: list[str]) -> str:
    rows = per_class(evaluation.confusion or [], classes)
    head = "".join(f"<th>{h}</th>" for h in ("class", "precision", "recall", "f1", "support"))
    body = "".join(
        f"<tr><td>{html.escape(str(r['class']))}</td>"
        + "".join(f'<td class="num">{_number(r[k])}</td>' for k in ("precision", "recall", "f1"))
        + f'<td class="num">{r["support"]}</td></tr>'
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _number(value: object) -> str:
    return "—" if not isinstance(value, float) or np.isnan(value) else f"{value:.4f}"


def history_figure(history: list[dict[str, float]]) -> Figure:
    figure = Figure(figsize=(6.4, 3.8), layout="constrained")
    axes = figure.add_subplot()
    epochs = [row["epoch"] for row in history]
    axes.plot(epochs, [row["train_loss"] for row in history], label="training loss")
    axes.plot(epochs, [row["valid_loss"] for row in history], label="validation loss")
    best = min(history, key=lambda row: row["valid_loss"])
    axes.axvline(best["epoch"], color="grey", ls="--", lw=1, label="kept (best validation)")
    axes.set(xlabel="epoch", ylabel="cross-entropy", title="Training curve")
    accuracy = axes.twinx()
    accuracy.plot(epochs, [row["valid_accuracy"] for row in history], color="C2", lw=1)
    accuracy.set_ylabel("validation accuracy", color="C2")
    axes.legend(fontsize=8, loc="upper right")
    axes.grid(True, alpha=0.3)
    return figure


def _misclassified(test: ImageSet, proba: np.ndarray) -> str:
    predicted = proba.argmax(axis=1)
    truth = np.asarray([test.classes.index(label) for label in test.labels])
    wrong = np.flatnonzero(predicted != truth)
    if not wrong.size:
        return "<p>Every test image was classified correctly.</p>"
    # Most confident mistakes first: those say the most about what the model learnt wrong.
    wrong = wrong[np.argsort(-proba[wrong, predicted[wrong]])][:MAX_SHOWN]
    figures = "".join(_thumbnail(test, int(i), int(predicted[i]), proba) for i in wrong)
    count = int((predicted != truth).sum())
    note = f"<p>{count} of {len(test)} test images are misclassified; {len(wrong)} shown, "
    note += "the most confident mistakes first.</p>"
    return note + f'<div class="grid">{figures}</div>'


def _thumbnail(test: ImageSet, index: int, predicted: int, proba: np.ndarray) -> str:
    pixels = test.pixels[index]
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    scale = max(1, THUMBNAIL // max(image.size))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    caption = (
        f"true {test.labels[index]} · predicted {test.classes[predicted]} "
        f"({proba[index, predicted]:.2f})"
    )
    return _image(buffer.getvalue(), caption, caption)


def _image(png: bytes, alt: str, caption: str | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    text = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    source = f"data:image/png;base64,{data}"
    return f'<figure><img src="{source}" alt="{html.escape(alt)}">{text}</figure>'
