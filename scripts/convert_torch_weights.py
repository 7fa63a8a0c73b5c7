#!/usr/bin/env python
"""Convert a PyTorch ResNeSt checkpoint (timm or the official PyTorch code) into a Gluon .params file.

    .venv-torch/bin/python scripts/convert_torch_weights.py resnest50d.pth resnest50d.params --model resnest50d

Needs torch (the .venv-torch environment: tools/setup_env.sh torch). The result loads with
``resnest_gluon.load_weights(net, 'resnest50d.params')`` into ``resnest_gluon.get_model('resnest50d')``.
"""
import argparse
import sys

import mxnet as mx

import resnest_gluon
from resnest_gluon.convert import convert_file


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="PyTorch checkpoint (.pth / .pt): a state_dict, possibly wrapped")
    parser.add_argument("dst", help="Gluon .params file to write (replaced atomically)")
    parser.add_argument("--model", required=True,
                        help="model name, e.g. resnest50d (one of: " + ", ".join(resnest_gluon.list_models()) + ")")
    parser.add_argument("--classes", type=int, default=None,
                        help="number of classes (default: the rows of the checkpoint's fc.weight)")
    args = parser.parse_args(argv)
    try:
        dst = convert_file(args.src, args.dst, args.model, classes=args.classes)
    except (ValueError, OSError, ImportError, mx.base.MXNetError) as err:  # user errors: message, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 1
    arrays = mx.nd.load(dst)
    total = sum(int(a.size) for a in arrays.values())
    stats = sum(int(a.size) for k, a in arrays.items() if k.endswith(("running_mean", "running_var")))
    print(f"wrote {dst} for {args.model}: {len(arrays)} tensors, {total - stats:,} parameters "
          f"(+ {stats:,} BatchNorm running statistics)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
