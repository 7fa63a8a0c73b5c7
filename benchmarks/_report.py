"""Turns measured rows into what the paper's table lets us check: ratios to resnest50@224, relative order, peers;
and what the benchmarks share: text-table formatting, the report header, writing the JSON and the PNG.

Absolute numbers from a CPU cannot be compared with the paper's V100 img/s; ratios between models can, roughly.

latency.json (schema "resnest-gluon/latency/1"):
    created, command, machine {cpu, cpus, threads, mxnet, onednn, loadavg_start/end, ...},
    protocol {ctx, dtype, warmup, iters, seconds, rounds, hybridize, sync, weights, img_per_s, reference},
    peers {gluoncv|timm: {python, versions}}                        (only with --compare)
    results [ {model, label ("name@size"), input_size, batch_size, dtype, params,
               latency_ms {p50, p90, mean, min, max}, img_per_s, rounds_img_per_s [..], latencies_ms [[..] per round],
               timed_batches, paper_gpu_img_per_s (null off the paper's table),
               ratio_to_reference {reference, ours, paper},
               peers {gluoncv|timm: {model, params, latency_ms, img_per_s, rounds_img_per_s, latencies_ms,
                                     timed_batches, ours_over_peer}} } ]      (peers only with --compare)
    order_check {"<batch>": {ours [labels by img/s], paper [same labels by paper img/s], matches}}
"""

import datetime
import os

from ._bench import command_line
from ._paper import GPU_IMG_PER_S, REFERENCE
from ._timing import NOISY_SPREAD


def add_ratios(results):
    """Adds ``ratio_to_reference`` {ours, paper} to each row (same batch size as the reference row), in place."""
    for row in results:
        ref = next((r for r in results if r["label"] == REFERENCE and r["batch_size"] == row["batch_size"]), None)
        ours = row["img_per_s"] / ref["img_per_s"] if ref else None
        paper = (GPU_IMG_PER_S[row["label"]] / GPU_IMG_PER_S[REFERENCE]) if row["label"] in GPU_IMG_PER_S else None
        row["ratio_to_reference"] = {"reference": REFERENCE, "ours": ours, "paper": paper}
        for peer in row.get("peers", {}).values():
            peer["ours_over_peer"] = row["img_per_s"] / peer["img_per_s"]
    return results


def order_check(results):
    """Per batch size: our models sorted by img/s against the paper's order (rows with a paper number only)."""
    checks = {}
    for batch in sorted({r["batch_size"] for r in results}):
        rows = [r for r in results if r["batch_size"] == batch and r["label"] in GPU_IMG_PER_S]
        if len(rows) < 2:
            continue
        ours = [r["label"] for r in sorted(rows, key=lambda r: -r["img_per_s"])]
        paper = sorted(ours, key=lambda label: -GPU_IMG_PER_S[label])
        checks[str(batch)] = {"ours": ours, "paper": paper, "matches": ours == paper}
    return checks


def fmt(value, spec):
    """A number for a table cell; None (not measured) as '-'."""
    return "-" if value is None else format(value, spec)


def table(results, peers=()):
    """The printed table: one line per model and batch size."""
    head = ["model", "input", "batch", "p50 ms", "p90 ms", "img/s", "paper GPU img/s",
            f"ours / {REFERENCE}", f"paper / {REFERENCE}"]
    for peer in peers:
        head += [f"{peer} img/s", f"ours/{peer}"]
    lines = [head]
    for r in results:
        ratio = r["ratio_to_reference"]
        line = [r["model"], str(r["input_size"]), str(r["batch_size"]), fmt(r["latency_ms"]["p50"], ".1f"),
                fmt(r["latency_ms"]["p90"], ".1f"), fmt(r["img_per_s"], ".2f"), fmt(r["paper_gpu_img_per_s"], ".2f"),
                fmt(ratio["ours"], ".3f"), fmt(ratio["paper"], ".3f")]
        for peer in peers:
            p = r.get("peers", {}).get(peer)
            line += [fmt(p and p["img_per_s"], ".2f"), fmt(p and p["ours_over_peer"], ".3f")]
        lines.append(line)
    return "\n".join([format_table(lines)] + noisy_notes(results))


def noisy_notes(results):
    """A line per side whose rounds disagree by more than NOISY_SPREAD (its median, and the ratios, may be off)."""
    notes = []
    for r in results:
        where = f"{r['label']} {r.get('case') or 'batch %d' % r['batch_size']}"
        sides = r["sides"].items() if "sides" in r else [("ours", r)] + list(r.get("peers", {}).items())
        for side, s in sides:
            if s.get("round_spread", 0) > NOISY_SPREAD:
                rounds = " ".join(f"{v:.2f}" for v in s["rounds_img_per_s"])
                notes.append(f"  noisy {where} {side}: rounds {rounds} img/s (spread {s['round_spread']:.2f} > "
                             f"{NOISY_SPREAD}); rerun on a quiet machine or with more --rounds")
    return notes


def format_table(lines):
    """Rows of strings (the first is the header) as aligned text: first column left, the others right."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
           for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def order_lines(checks):
    lines = []
    for batch, c in checks.items():
        verdict = "matches the paper" if c["matches"] else "differs from the paper"
        lines.append(f"batch {batch}: relative order {verdict}")
        if not c["matches"]:
            lines.append(f"  ours : {' > '.join(c['ours'])}\n  paper: {' > '.join(c['paper'])}")
    return "\n".join(lines)


def header(schema, machine):
    """The fields every benchmark report (latency.json, compare.json) starts with, in this order."""
    return {
        "schema": schema,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
        "machine": machine,
    }


def write_json(path, report):
    """The report, written atomically (imported here: this module must not load a framework at import)."""
    from resnest_gluon.atomic import write_json as atomic_write_json

    atomic_write_json(path, report)


def write_outputs(out_dir, stem, doc, draw):
    """Writes ``OUT/<stem>.json`` (atomically), then the chart with ``draw(png_path)`` to ``OUT/<stem>.png``; prints
    both paths and returns them (json_path, png_path)."""
    os.makedirs(out_dir, exist_ok=True)
    json_path, png_path = os.path.join(out_dir, f"{stem}.json"), os.path.join(out_dir, f"{stem}.png")
    write_json(json_path, doc)
    draw(png_path)
    print(f"wrote {json_path} and {png_path}")
    return json_path, png_path
