"""The PNG beside the JSON: img/s per model, one panel per batch size, with the paper's ratios for scale.

Black ticks mark where each model would sit if our run reproduced the paper's ratios to resnest50@224 exactly
(paper ratio x our resnest50@224 img/s), so a bar far from its tick is a model whose relative speed differs.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from _paper import REFERENCE  # noqa: E402

COLORS = {"ours": "#1f77b4", "gluoncv": "#ff7f0e", "timm": "#2ca02c"}


def bar_chart(path, results, peers, title):
    batches = sorted({r["batch_size"] for r in results})
    fig, axes = plt.subplots(len(batches), 1, figsize=(max(7, 1.6 * len(results) / len(batches) + 5),
                                                       3.6 * len(batches)), squeeze=False)
    series = ["ours", *peers]
    width = 0.8 / len(series)
    for ax, batch in zip(axes[:, 0], batches):
        rows = [r for r in results if r["batch_size"] == batch]
        for k, name in enumerate(series):
            xs, ys = [], []
            for i, r in enumerate(rows):
                value = r["img_per_s"] if name == "ours" else r.get("peers", {}).get(name, {}).get("img_per_s")
                if value is not None:
                    xs.append(i + (k - (len(series) - 1) / 2) * width)
                    ys.append(value)
            ax.bar(xs, ys, width, label=name, color=COLORS.get(name))
        ref = next((r for r in rows if r["label"] == REFERENCE), None)
        ours_x = -(len(series) - 1) / 2 * width  # the ticks sit on our bars
        ticks = [(i + ours_x, r["ratio_to_reference"]["paper"] * ref["img_per_s"]) for i, r in enumerate(rows)
                 if ref and r["ratio_to_reference"]["paper"] is not None]
        if ticks:
            ax.scatter(*zip(*ticks), marker="_", s=400, color="black", zorder=3,
                       label=f"paper ratio x our {REFERENCE}")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["label"] for r in rows], rotation=20, ha="right")
        ax.set_ylabel("img/s")
        ax.set_title(f"{title} - batch {batch}", fontsize=10)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
