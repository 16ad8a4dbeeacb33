"""Classification metrics, per-class tables, confusion matrices and model-to-model comparisons."""

import csv
import logging
import pathlib

import numpy as np
from sklearn import metrics as skmetrics

from ids_edge.metadata import write_json_atomic

logger = logging.getLogger(__name__)


def classification_report(y_true, y_pred, class_names):
    """Compute accuracy, macro and weighted precision/recall/F1, per-class rows and the confusion matrix.

    Returns:
        A JSON-ready dict. Fractions are in [0, 1]; ``per_class`` has one entry per class name
        with ``precision``, ``recall``, ``f1`` and ``support`` (rows in ``y_true``).
    """
    indices = list(range(len(class_names)))
    precision, recall, f1, support = skmetrics.precision_recall_fscore_support(
        y_true, y_pred, labels=indices, zero_division=0
    )
    report = {
        "rows": int(len(y_true)),
        "accuracy": float(skmetrics.accuracy_score(y_true, y_pred)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": skmetrics.confusion_matrix(y_true, y_pred, labels=indices).tolist(),
        "class_names": list(class_names),
    }
    present = [i for i in indices if support[i] > 0]
    for average in ("macro", "weighted"):
        p, r, f, _ = skmetrics.precision_recall_fscore_support(
            y_true, y_pred, labels=present, average=average, zero_division=0
        )
        report[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return report


def compare_reports(candidate, reference, candidate_pred, reference_pred):
    """Describe how ``candidate`` differs from ``reference`` on the same rows.

    Returns:
        Changes in percentage points (candidate minus reference) of accuracy, macro F1,
        weighted F1 and each class's F1, and ``agreement``: the fraction of rows on which both
        models predict the same class.
    """
    return {
        "accuracy_change_pp": 100 * (candidate["accuracy"] - reference["accuracy"]),
        "macro_f1_change_pp": 100 * (candidate["macro"]["f1"] - reference["macro"]["f1"]),
        "weighted_f1_change_pp": 100 * (candidate["weighted"]["f1"] - reference["weighted"]["f1"]),
        "per_class_f1_change_pp": {
            name: 100 * (candidate["per_class"][name]["f1"] - reference["per_class"][name]["f1"])
            for name in candidate["per_class"]
        },
        "agreement": float(np.mean(np.asarray(candidate_pred) == np.asarray(reference_pred))),
    }


def write_confusion_matrix(report, csv_path, png_path, title):
    """Write the confusion matrix as CSV (rows: true class, columns: predicted class) and PNG."""
    names = report["class_names"]
    matrix = np.asarray(report["confusion_matrix"])
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["true \\ predicted", *names])
        for name, row in zip(names, matrix):
            writer.writerow([name, *row.tolist()])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.45 * len(names) + 2.5)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title, fontsize=9)
    if len(names) <= 8:
        for (i, j), count in np.ndenumerate(matrix):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, label="share of the true class's rows")
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)


def format_summary(report, name):
    """Format headline metrics as one line: accuracy, macro F1 and weighted F1 in percent."""
    return (
        f"{name}: accuracy {100 * report['accuracy']:.2f}%, macro F1 {100 * report['macro']['f1']:.2f}%, "
        f"weighted F1 {100 * report['weighted']['f1']:.2f}% on {report['rows']} test rows"
    )


def markdown_report(report, title, comparison=None, reference_name="Keras float32"):
    """Render a report, and optionally its comparison with a reference model, as Markdown."""
    lines = [f"# {title}", ""]
    lines.append("| metric | value |" if comparison is None else f"| metric | value | change against {reference_name} (pp) |")
    lines.append("|---|---|" if comparison is None else "|---|---|---|")
    rows = [
        ("accuracy", report["accuracy"], "accuracy_change_pp"),
        ("macro precision", report["macro"]["precision"], None),
        ("macro recall", report["macro"]["recall"], None),
        ("macro F1", report["macro"]["f1"], "macro_f1_change_pp"),
        ("weighted precision", report["weighted"]["precision"], None),
        ("weighted recall", report["weighted"]["recall"], None),
        ("weighted F1", report["weighted"]["f1"], "weighted_f1_change_pp"),
    ]
    for label, value, change_key in rows:
        if comparison is None:
            lines.append(f"| {label} | {value:.4f} |")
        else:
            change = f"{comparison[change_key]:+.2f}" if change_key else ""
            lines.append(f"| {label} | {value:.4f} | {change} |")
    if comparison is not None:
        lines.append(f"| same class as {reference_name} | {comparison['agreement']:.4f} | |")

    lines += ["", "| class | precision | recall | F1 | support |" + (" F1 change (pp) |" if comparison else ""),
              "|---|---|---|---|---|" + ("---|" if comparison else "")]
    for name, row in report["per_class"].items():
        if row["support"] == 0:
            # Without test rows a class's recall and F1 are undefined; macro averages leave it out.
            line = f"| {name} | n/a | n/a | n/a (no test rows) | 0 |"
        else:
            line = f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |"
        if comparison:
            line += f" {comparison['per_class_f1_change_pp'][name]:+.2f} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_evaluation(out_dir, prefix, report, title, comparison=None):
    """Write ``PREFIX_metrics.json``, ``PREFIX_metrics.md`` and the confusion matrix CSV and PNG."""
    out_dir = pathlib.Path(out_dir)
    payload = {"metrics": report}
    if comparison is not None:
        payload["change_against_keras"] = comparison
    write_json_atomic(out_dir / f"{prefix}_metrics.json", payload)
    (out_dir / f"{prefix}_metrics.md").write_text(markdown_report(report, title, comparison), encoding="utf-8")
    write_confusion_matrix(report, out_dir / f"{prefix}_confusion_matrix.csv", out_dir / f"{prefix}_confusion_matrix.png", title)
