"""The PNGs beside the JSON: grouped bars of img/s, ours beside the peers.

latency.png: img/s per model, one panel per batch size. Black ticks mark where each model would sit if our run
reproduced the paper's ratios to resnest50@224 exactly (paper ratio x our resnest50@224 img/s), so a bar far from
its tick is a model whose relative speed differs.
compare.png: img/s per case and side (compare.py), one panel per model, our bars labelled with their ratio to the
fastest peer, "n/a" where a side could not run.
op_profile.png: ms per batch of the costliest operators (op_profile.py), convolutions in blue.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ._paper import REFERENCE  # noqa: E402

COLORS = {"ours": "#1f77b4", "gluoncv": "#ff7f0e", "gluoncv-hybrid": "#fdae6b", "timm": "#2ca02c",
          "ours-mxnet": "#1f77b4", "ours-onnxruntime": "#6baed6", "ours-openvino": "#08306b",
          "timm-onnxruntime": "#98df8a", "timm-openvino": "#00441b"}


def _grouped_bars(ax, n_groups, series, value, note=None):
    """Draws one bar per (group, series) with ``value(group_index, name)`` (None: no bar); ``note`` the same way
    gives a text above the bar (or above the axis where there is none). Returns each series' x offset in a group."""
    width = 0.8 / len(series)
    offsets = {name: (k - (len(series) - 1) / 2) * width for k, name in enumerate(series)}
    for name in series:
        bars = [(i + offsets[name], value(i, name)) for i in range(n_groups)]
        bars = [(x, y) for x, y in bars if y is not None]
        if bars:
            ax.bar(*zip(*bars), width, label=name, color=COLORS.get(name))
        for i in range(n_groups):
            text = note(i, name) if note else None
            if text:
                ax.annotate(text, (i + offsets[name], value(i, name) or 0), ha="center", va="bottom", fontsize=7,
                            xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(n_groups))
    ax.set_ylabel("img/s")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return offsets


def _save(fig, path):
    from resnest_gluon.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def bar_chart(path, results, peers, title):
    """latency.png."""
    batches = sorted({r["batch_size"] for r in results})
    fig, axes = plt.subplots(len(batches), 1, figsize=(max(7, 1.6 * len(results) / len(batches) + 5),
                                                       3.6 * len(batches)), squeeze=False)
    for ax, batch in zip(axes[:, 0], batches):
        rows = [r for r in results if r["batch_size"] == batch]

        def value(i, name):
            r = rows[i]
            return r["img_per_s"] if name == "ours" else r.get("peers", {}).get(name, {}).get("img_per_s")

        offsets = _grouped_bars(ax, len(rows), ["ours", *peers], value)
        ref = next((r for r in rows if r["label"] == REFERENCE), None)
        ticks = [(i + offsets["ours"], r["ratio_to_reference"]["paper"] * ref["img_per_s"])
                 for i, r in enumerate(rows) if ref and r["ratio_to_reference"]["paper"] is not None]
        if ticks:  # the ticks sit on our bars
            ax.scatter(*zip(*ticks), marker="_", s=400, color="black", zorder=3,
                       label=f"paper ratio x our {REFERENCE}")
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_xticklabels([r["label"] for r in rows], rotation=20, ha="right")
        ax.set_title(f"{title} - batch {batch}", fontsize=10)
    _save(fig, path)


def compare_chart(path, results, sides, title):
    """compare.png: rows of compare.json, one panel per model, a bar per case and side; our bars are labelled with
    their ratio to the fastest peer of the case, the peers' with their img/s; sides that could not run have no bar."""
    labels = list(dict.fromkeys(r["label"] for r in results))
    groups = max(sum(r["label"] == lb for r in results) for lb in labels)
    fig, axes = plt.subplots(len(labels), 1, squeeze=False,
                             figsize=(max(8, 0.45 * len(sides) * groups + 4), 3.8 * len(labels)))
    for ax, label in zip(axes[:, 0], labels):
        rows = [r for r in results if r["label"] == label]

        def side(i, name):
            entry = rows[i]["sides"].get(name, {})
            return entry if entry.get("available") else None

        def value(i, name):
            entry = side(i, name)
            return entry and entry["img_per_s"]

        def note(i, name):
            entry = side(i, name)
            if entry is None:
                return "n/a"
            ratio = entry.get("over_best_peer")
            return f"x{ratio:.2f}" if ratio is not None else f"{entry['img_per_s']:.3g}"

        _grouped_bars(ax, len(rows), list(sides), value, note)
        ax.set_xticklabels([r["case"] for r in rows])
        ax.set_title(f"{label}: {title} (our bars: x the fastest peer)", fontsize=10)
    _save(fig, path)


def op_profile_chart(path, rows, title):
    """op_profile.png: horizontal bars, ms per batch of each operator row (costliest first), convolutions blue."""
    rows = rows[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    ax.barh([r["op"] for r in rows], [r["ms_per_batch"] for r in rows],
            color=[COLORS["ours"] if r["convolution"] else COLORS["gluoncv"] for r in rows])
    ax.set_xlabel("ms per batch (blue: convolutions)")
    ax.set_title(title, fontsize=10)
    _save(fig, path)
