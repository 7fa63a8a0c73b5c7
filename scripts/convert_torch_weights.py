#!/usr/bin/env python
"""Convert a PyTorch ResNeSt checkpoint (timm or the official PyTorch code) into a Gluon .params file.

    .venv-torch/bin/python scripts/convert_torch_weights.py resnest50d.pth resnest50d.params --model resnest50d

Needs torch (the .venv-torch environment: tools/setup_env.sh torch). The result loads with
``resnest_gluon.load_weights(net, 'resnest50d.params')`` into ``resnest_gluon.get_model('resnest50d')``.

Exit status (:mod:`resnest_gluon.exits`): 0 written; 2 with one line ``error: ...`` naming the file or model (a missing
or unreadable checkpoint, an unknown model, weights that do not fit it, torch not installed); 4 disk full.
"""
import argparse
import sys

import mxnet as mx

import resnest_gluon
from resnest_gluon.convert import convert_file
from resnest_gluon.exits import EXIT_USAGE, ArgumentParser, run_script

# MXNet's own errors while the converted file is written and loaded back: the weights do not fit (one line each).
FAILURES = ((mx.base.MXNetError, EXIT_USAGE, "error"),)


def run(argv=None):
    """Converts and prints what was written; returns the file written. Raises the library's errors."""
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="PyTorch checkpoint (.pth / .pt): a state_dict, possibly wrapped")
    parser.add_argument("dst", help="Gluon .params file to write (replaced atomically)")
    parser.add_argument("--model", required=True,
                        help="model name, e.g. resnest50d (one of: " + ", ".join(resnest_gluon.list_models()) + ")")
    parser.add_argument("--classes", type=int, default=None,
                        help="number of classes (default: the rows of the checkpoint's fc.weight)")
    args = parser.parse_args(argv)
    dst = convert_file(args.src, args.dst, args.model, classes=args.classes)
    arrays = mx.nd.load(dst)
    total = sum(int(a.size) for a in arrays.values())
    stats = sum(int(a.size) for k, a in arrays.items() if k.endswith(("running_mean", "running_var")))
    print(f"wrote {dst} for {args.model}: {len(arrays)} tensors, {total - stats:,} parameters "
          f"(+ {stats:,} BatchNorm running statistics)")
    return dst


def main(argv=None):
    """The exit code of :func:`run`: 0, or a known failure's, its message one line on stderr."""
    return run_script(run, argv, failures=FAILURES)


if __name__ == "__main__":
    sys.exit(main())
