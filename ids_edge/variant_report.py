"""Compare exported variants of one run: a Markdown table per metric and a size-against-macro-F1 plot.

Both read the dict that ``export.json`` contains (:func:`ids_edge.export.summary_payload`), so
scripts can redraw them from the file.
"""

import logging

logger = logging.getLogger(__name__)


def _percent(value):
    return f"{100 * value:.2f}"


def comparison_markdown(payload, title="Exported variants against the Keras float32 model", level=1):
    """Render every variant's size, headline metrics, change against Keras and gate verdict as Markdown.

    ``level`` is the heading level of ``title``; the sections below it get the next level.

    The per-class table lists classes from the fewest test rows to the most, because rare attack
    classes lose F1 first under compression and an overall accuracy hides that.
    """
    keras = payload["keras_metrics"]
    variants = payload["variants"]
    gate = payload["gate"]
    heading = "#" * level
    lines = [
        f"{heading} {title}",
        "",
        f"Test split of {keras['rows']} rows, evaluated in {payload['runtime']}. Changes are in percentage "
        "points (pp), variant minus Keras. Gate: accuracy drop at most "
        f"{gate['max_accuracy_drop']:.2f} pp, macro-F1 drop at most {gate['max_macro_f1_drop']:.2f} pp"
        + (f", F1 drop of any class at most {gate['max_class_f1_drop']:.2f} pp." if gate.get("max_class_f1_drop") is not None
           else ", per-class F1 not gated."),
        "",
        "| variant | size (bytes) | gzip (bytes) | accuracy % | macro F1 % | weighted F1 % | accuracy change | "
        "macro F1 change | weighted F1 change | same class as Keras % | worst class F1 change | gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| Keras float32 | | | {_percent(keras['accuracy'])} | {_percent(keras['macro']['f1'])} | "
        f"{_percent(keras['weighted']['f1'])} | | | | | | |",
    ]
    for name, variant in variants.items():
        metrics = variant["metrics"]
        change = variant["change_against_keras"]
        per_class = change["per_class_f1_change_pp"]
        worst = min(per_class, key=per_class.get)
        verdict = "written" if variant["written"] else "rejected: " + "; ".join(variant["gate_failures"])
        lines.append(
            f"| {name} | {variant['size_bytes']} | {variant['gzip_bytes']} | {_percent(metrics['accuracy'])} | "
            f"{_percent(metrics['macro']['f1'])} | {_percent(metrics['weighted']['f1'])} | "
            f"{change['accuracy_change_pp']:+.2f} | {change['macro_f1_change_pp']:+.2f} | "
            f"{change['weighted_f1_change_pp']:+.2f} | {100 * change['agreement']:.2f} | "
            f"{worst} {per_class[worst]:+.2f} | {verdict} |"
        )

    names = list(variants)
    classes = sorted(keras["per_class"], key=lambda c: (keras["per_class"][c]["support"], c))
    lines += [
        "",
        f"{heading}# F1 per class: Keras value and change per variant (pp)",
        "",
        "| class | test rows | Keras F1 % | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for class_name in classes:
        row = keras["per_class"][class_name]
        changes = [f"{variants[name]['change_against_keras']['per_class_f1_change_pp'][class_name]:+.2f}" for name in names]
        lines.append(f"| {class_name} | {row['support']} | {_percent(row['f1'])} | " + " | ".join(changes) + " |")

    pruned = {name: variant for name, variant in variants.items() if variant.get("sparsity")}
    if pruned:
        lines += ["", f"{heading}# Achieved sparsity per layer (fraction of zero kernel weights)", ""]
        layers = list(next(iter(pruned.values()))["sparsity"])
        lines.append("| variant | " + " | ".join(layers) + " |")
        lines.append("|---|" + "---|" * len(layers))
        for name, variant in pruned.items():
            cells = []
            for layer in layers:
                entry = variant["sparsity"][layer]
                cells.append(f"{entry['sparsity']:.3f}" + (" (2:4)" if entry["two_of_four"] else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_size_against_macro_f1(payload, png_path, title=None):
    """Draw each variant's file size (bytes, log scale) against its macro F1, with the Keras F1 as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keras_f1 = 100 * payload["keras_metrics"]["macro"]["f1"]
    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    for index, (name, variant) in enumerate(payload["variants"].items()):
        size = variant["size_bytes"]
        f1 = 100 * variant["metrics"]["macro"]["f1"]
        marker = "o" if variant["written"] else "x"
        axes.scatter([size], [f1], marker=marker, color="tab:blue" if variant["written"] else "tab:red")
        # Variants of nearly equal size and F1 sit on top of each other, so labels step apart.
        axes.annotate(name, (size, f1), textcoords="offset points", xytext=(4, 4 - 9 * (index % 3)), fontsize=7)
    axes.axhline(keras_f1, color="gray", linestyle="--", linewidth=1, label=f"Keras float32 ({keras_f1:.2f}%)")
    axes.set_xscale("log")
    axes.set_xlabel(".tflite file size (bytes, log scale)")
    axes.set_ylabel("macro F1 on the test split (%)")
    axes.set_title(title or "Variant size against macro F1 (x: rejected by the gate)", fontsize=9)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
