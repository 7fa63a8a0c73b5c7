#!/usr/bin/env python
"""A tour of the ResNeSt family: builds every registered model, checks its trainable parameter count against the
published weights, runs one hybridized forward at the model's own input size for the models named by --run, and
round-trips one model through export() / SymbolBlock.imports(). Writes the table as JSON beside the printed text.

    python scripts/model_tour.py --out out/tour

Exit status (:mod:`resnest_gluon.exits`): 0 done; 1 a model whose parameter count is not the published one; 2 with
one line ``error: ...`` for an unusable flag or an ``--out`` that cannot be written; 4 disk full.
"""
import os
import sys
import time

import mxnet as mx
import numpy as np

import resnest_gluon as rg
from resnest_gluon.atomic import write_json
from resnest_gluon.exits import ArgumentParser, run_script


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/tour", help="folder for tour.json and the exported model")
    parser.add_argument("--run", nargs="*", default=["resnest14", "resnest50", "resnest50_fast_4s2x40d"],
                        help="models to run a forward pass on (at their data config's input size)")
    parser.add_argument("--batch-size", type=int, default=1)
    return parser.parse_args(argv)


def run(argv=None):
    """The tour: prints the table, writes tour.json and the exported model. Raises the library's errors."""
    args = parse_args(argv)
    unknown = sorted(set(args.run) - set(rg.list_models()))
    if unknown:
        raise ValueError(f"--run: unknown model {', '.join(unknown)}; known: {', '.join(rg.list_models())}")
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


def main(argv=None):
    """The exit code of :func:`run`: 0, or a known failure's, its message one line on stderr."""
    return run_script(run, argv)


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
    sys.exit(main())
