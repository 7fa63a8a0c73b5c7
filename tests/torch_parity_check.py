#!/usr/bin/env python
"""Logit parity between timm's ResNeSt models and ours, through the PyTorch -> Gluon weight converter.

Run with the torch environment (tests/test_convert.py does this from the main one):

    .venv-torch/bin/python tests/torch_parity_check.py resnest14d resnest50d --cli resnest14d

For each model: timm builds it without pretrained weights, every weight is randomised (not trivial, and at a scale
where activations neither blow up nor vanish through 269 layers), its state_dict is saved to a temporary .pth,
converted (through scripts/convert_torch_weights.py in a subprocess for the ``--cli`` models, through
``convert_file`` otherwise), loaded into our model, and the logits of both frameworks on the same random batch are
compared, imperative and hybridized (static_alloc, static_shape). One JSON line per model goes to stdout.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import mxnet as mx
import numpy as np
import timm
import torch
from torch import nn

import resnest_gluon
from resnest_gluon.convert import convert_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(REPO, "scripts", "convert_torch_weights.py")
TIMM_MODELS = ("resnest14d", "resnest26d", "resnest50d", "resnest101e", "resnest200e", "resnest269e",
               "resnest50d_1s4x24d", "resnest50d_4s2x40d")


@torch.no_grad()
def randomise(model, generator, x):
    """Random but well-scaled weights, so that any name or layout mistake in the converter changes the logits.

    BatchNorm: weight U(0.5, 1.5) (timm zero-initialises the last one of each block, which would hide the whole
    residual branch), bias and running_mean N(0, 0.1), running_var U(0.5, 1.5). Convolutions and the classifier:
    N(0, 1/fan_in), biases N(0, 0.1). In inference mode BN does not renormalise, so a fixed weight scale makes the
    activations grow or shrink geometrically with depth (resnest269e has 89 blocks); hence each bias-free
    convolution is then rescaled so that its output has unit std on ``x`` (LSUV-style, in one forward pass),
    leaving the logits O(1) for every depth.
    """
    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=generator) * std)

    def uniform(t, low, high):
        t.copy_(torch.rand(t.shape, generator=generator) * (high - low) + low)

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            normal(m.weight, 1.0 / math.sqrt(m.weight[0].numel()))
            if m.bias is not None:
                normal(m.bias, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            uniform(m.weight, 0.5, 1.5)
            normal(m.bias, 0.1)
            normal(m.running_mean, 0.1)
            uniform(m.running_var, 0.5, 1.5)

    def unit_std(module, inputs, output):  # output is linear in the weight: rescale both
        std = float(output.std())
        module.weight.div_(std)
        return output / std

    hooks = [m.register_forward_hook(unit_std) for m in model.modules()
             if isinstance(m, nn.Conv2d) and m.bias is None]
    try:
        model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return model


def convert_with_cli(src, dst, name):
    proc = subprocess.run([sys.executable, CLI, src, dst, "--model", name], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{CLI} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def check(name, use_cli, workdir, seed=0, batch=2, size=224):
    t0 = time.time()
    torch.manual_seed(seed)
    x = np.random.RandomState(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    tmodel = randomise(timm.create_model(name, pretrained=False), torch.Generator().manual_seed(seed),
                       torch.from_numpy(x))
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x)).numpy().astype(np.float64)

    src = os.path.join(workdir, f"{name}.pth")
    dst = os.path.join(workdir, f"{name}.params")
    state = tmodel.state_dict()
    if use_cli:  # also exercise the unwrapping of a training checkpoint saved from a DataParallel model
        torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, src)
    else:
        torch.save(state, src)
    del tmodel, state
    t1 = time.time()
    cli_out = convert_with_cli(src, dst, name) if use_cli else None
    if not use_cli:
        convert_file(src, dst, name)
    t2 = time.time()

    net = resnest_gluon.get_model(name)
    resnest_gluon.load_weights(net, dst)
    data = mx.nd.array(x)
    out_imperative = net(data).asnumpy().astype(np.float64)
    net.hybridize(static_alloc=True, static_shape=True)
    net(data).wait_to_read()  # first call builds the cached graph
    out_hybrid = net(data).asnumpy().astype(np.float64)
    t3 = time.time()
    diff_imp = float(np.abs(out_imperative - ref).max())
    diff_hyb = float(np.abs(out_hybrid - ref).max())
    return {
        "model": name,
        "via": "cli" if use_cli else "convert_file",
        "max_abs_diff": max(diff_imp, diff_hyb),
        "max_abs_diff_imperative": diff_imp,
        "max_abs_diff_hybrid": diff_hyb,
        "logits_std": float(ref.std()),
        "logits_max_abs": float(np.abs(ref).max()),
        "logits_shape": list(ref.shape),
        "argmax_equal": bool((ref.argmax(1) == out_hybrid.argmax(1)).all()),
        "seconds": {"torch": round(t1 - t0, 2), "convert": round(t2 - t1, 2), "mxnet": round(t3 - t2, 2)},
        "cli_output": cli_out,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=list(TIMM_MODELS), help="timm model names (default: all 8)")
    parser.add_argument("--cli", nargs="*", default=[], metavar="NAME",
                        help="models to convert through scripts/convert_torch_weights.py in a subprocess")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    unknown = [n for n in args.models + args.cli if n not in TIMM_MODELS]
    if unknown:
        parser.error(f"not a timm ResNeSt with a twin here: {', '.join(unknown)} (known: {', '.join(TIMM_MODELS)})")
    status = 0
    with tempfile.TemporaryDirectory(prefix="resnest_parity_") as workdir:
        for name in dict.fromkeys(args.models + args.cli):  # keeps the order, no duplicates
            try:
                result = check(name, name in args.cli, workdir, args.seed, args.batch, args.size)
            except Exception as err:  # report and go on with the other models
                result = {"model": name, "error": f"{type(err).__name__}: {err}"}
                status = 1
            for f in os.listdir(workdir):  # the checkpoints of the big models are 0.4 GB each
                os.remove(os.path.join(workdir, f))
            print(json.dumps(result), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
