#!/usr/bin/env python
"""A tour of the ResNeSt family: builds every registered model, checks its trainable parameter count against the
published weights, runs one hybridized forward at the model's own input size for the models named by --run, and
round-trips one model through export() / SymbolBlock.imports(). Writes the table as JSON beside the printed text.

    python scripts/model_tour.py --out out/tour
"""
import argparse
import os
import time

import mxnet as mx
import numpy as np

import resnest_gluon as rg
from resnest_gluon.atomic import write_json


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/tour", help="folder for tour.json and the exported model")
    parser.add_argument("--run", nargs="*", default=["resnest14", "resnest50", "resnest50_fast_4s2x40d"],
                        help="models to run a forward pass on (at their data config's input size)")
    parser.add_argument("--batch-size", type=int, default=1)
    return parser.parse_args()


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    print(f"{'model':<24} {'params':>12} {'published':>12} {'input':>5} {'crop':>6} {'interp':>8} {'top1':>6}"
          f" {'img/s':>7}")
    for name in rg.list_models():
        cfg = rg.get_config(name)
        net = rg.get_model(name)
        params = rg.count_params(net)
        if cfg.params is not None and params != cfg.params:
            raise SystemExit(f"{name}: {params} trainable parameters, the published weights hold {cfg.params}")
        speed = None
        if name in args.run:
            speed = forward_speed(net, cfg.data.input_size, args.batch_size)
        d = cfg.data
        rows.append({"model": name, "params": params, "published_params": cfg.params, **d.to_dict(),
                     "top1": cfg.top1, "source": cfg.source, "img_per_s": speed})
        published = f"{cfg.params:,}" if cfg.params else "-"
        shown_speed = f"{speed:.2f}" if speed else "-"
        print(f"{name:<24} {params:>12,} {published:>12} {d.input_size:>5} {d.crop_pct:>6.3f} "
              f"{d.interpolation:>8} {cfg.top1 or '-':>6} {shown_speed:>7}")
    diff = export_round_trip("resnest14", os.path.join(args.out, "resnest14"))
    print(f"export/SymbolBlock.imports round trip of resnest14: max abs logit difference {diff:.2e}")
    write_json(os.path.join(args.out, "tour.json"), {"models": rows, "export_round_trip_max_abs_diff": diff})
    print(f"wrote {os.path.join(args.out, 'tour.json')}")


def forward_speed(net, size, batch_size):
    """Images/s of one hybridized (static) forward after a warm-up call, random weights."""
    net.initialize(mx.init.Xavier())
    net.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.random.uniform(shape=(batch_size, 3, size, size))
    net(x).wait_to_read()
    start = time.perf_counter()
    out = net(x)
    out.wait_to_read()
    assert out.shape == (batch_size, 1000) and np.isfinite(out.asnumpy()).all()
    return batch_size / (time.perf_counter() - start)


def export_round_trip(name, prefix):
    net = rg.get_model(name)
    net.initialize(mx.init.Xavier())
    net.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.random.uniform(shape=(1, 3, 224, 224))
    expected = net(x).asnumpy()
    net.export(prefix)
    imported = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
    return float(np.abs(imported(x).asnumpy() - expected).max())


if __name__ == "__main__":
    main()
