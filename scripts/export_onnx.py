"""Export a ResNeSt classifier to ONNX for ONNX Runtime and OpenVINO, with its model information inside.

    python scripts/export_onnx.py --params runs/x/ckpt-0007.params --out model.onnx      # its classes and size
    python scripts/export_onnx.py --model resnest50 --pretrained --out resnest50.onnx
    python scripts/export_onnx.py --model resnest101 --out r101.onnx     # random weights: for speed measurements
    python scripts/export_onnx.py --params ckpt.params --dtype int8 --calib-rec train.rec --out model-int8.onnx

The file has a dynamic batch axis and takes images of the data config's input size (``--crop-size`` exports for
another); its ``metadata_props`` carry the model, class names and evaluation transform, so
``predict.py --params model.onnx`` and ``verify.py --params model.onnx`` need no other flag. After writing, the
file is run in ONNX Runtime (and OpenVINO, when installed) on a random batch of two and compared with MXNet: a
difference above ``--tolerance`` fails the export (exit 2) and leaves ``--out`` as it was. ``--dtype int8`` writes the
graph quantized by ONNX Runtime's static quantization (both engines run it), calibrated on ``--calib-rec`` as
``verify.py --dtype int8`` is; its check is the top-1 agreement with MXNet's float32 on the calibration images,
which must reach ``--min-agreement``.

Exit status (:mod:`resnest_gluon.exits`): 0 written and checked; 2 with one line ``error: ...`` naming the file or flag
(a wrong weights file, unusable flags, a failed check, no engine to check with); 4 disk full; 8 when ``--pretrained``
weights cannot be had (offline, mirror, SHA-1).
"""
import os
import sys
import time

import mxnet as mx
import numpy as np
import onnx

from resnest_gluon.atomic import atomic_write
from resnest_gluon.cli import (add_data_config_arguments, add_model_arguments, add_precision_arguments,
                               data_config_changes, model_info, optimize_kwargs)
from resnest_gluon.deploy import ENGINE_BACKENDS, onnx_model, open_engine
from resnest_gluon.deploy.onnx_quantize import quantize_onnx
from resnest_gluon.deploy.quantization import calibration_batches
from resnest_gluon.exits import ArgumentParser, add_note, run_script
from resnest_gluon.trained import is_onnx, load_trained


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(p, weights_required=False)
    add_data_config_arguments(p)
    p.add_argument("--out", required=True, help="the ONNX file to write (.onnx)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest difference allowed between an engine's logits and MXNet's (default 1e-4)")
    p.add_argument("--min-agreement", type=float, default=0.9,
                   help="int8: smallest top-1 agreement with float32 on the calibration images (default 0.9)")
    p.add_argument("--no-check", action="store_true", help="skip running the file in the engines")
    add_precision_arguments(p)
    p.add_argument("--batch-size", type=int, default=16, help="int8: images per calibration batch (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random weights (no --params / --pretrained) and check batch")
    return p.parse_args(argv)


def build(args):
    """The network the flags describe, with its weights (random ones without --params / --pretrained)."""
    if args.params and is_onnx(args.params):
        raise ValueError(f"--params {args.params} is an ONNX file already")
    info = model_info(args)
    if args.params:
        return load_trained(args.params, model=args.model, num_classes=args.num_classes,
                            class_names=list(info.class_names) if info.class_names else None,
                            **data_config_changes(args))
    net = info.build(mx.cpu(), pretrained=args.pretrained)
    if not args.pretrained:
        mx.random.seed(args.seed)
        net.initialize(mx.init.Xavier(magnitude=2))
        print(f"note: {info.model} has random weights (no --params or --pretrained): for speed measurements",
              file=sys.stderr)
    return net


def engines(path):
    """Each installed engine on the file."""
    found = {}
    for backend in ENGINE_BACKENDS:
        try:
            found[backend] = open_engine(path, backend)
        except ImportError:
            continue
    if not found:
        raise ImportError("neither onnxruntime nor openvino is installed: nothing to check the file with "
                          "(pip install -r requirements-deploy.txt, or --no-check)")
    return found


def check_float32(path, net, size, tolerance, seed):
    """The largest |engine - MXNet| over the logits of a random batch of two (relative to the largest logit), per
    installed engine; ``ValueError`` above ``tolerance``."""
    batch = np.random.default_rng(seed).standard_normal((2, 3, size, size)).astype(np.float32)
    expected = net(mx.nd.array(batch)).asnumpy()
    scale = max(1.0, float(np.abs(expected).max()))
    diffs = {k: float(np.abs(e(batch) - expected).max()) / scale for k, e in engines(path).items()}
    bad = {k: v for k, v in diffs.items() if not v <= tolerance}
    if bad:
        raise ValueError("the exported file disagrees with MXNet: " + ", ".join(
            f"{k} {v:.2e}" for k, v in bad.items()) + f" (> --tolerance {tolerance:g}, relative to the largest logit)")
    return ", ".join(f"{k} matches MXNet within {v:.1e}" for k, v in diffs.items())


def check_int8(path, net, batches, min_agreement):
    """Top-1 agreement of the quantized file with MXNet's float32 on the calibration images, per engine;
    ``ValueError`` below ``min_agreement``."""
    expected = np.concatenate([net(b).asnumpy().argmax(axis=1) for b in batches])
    agreement = {k: float(np.mean(np.concatenate([e(b.asnumpy()).argmax(axis=1) for b in batches]) == expected))
                 for k, e in engines(path).items()}
    bad = {k: v for k, v in agreement.items() if not v >= min_agreement}
    if bad:
        raise ValueError("the quantized file disagrees with float32: " + ", ".join(
            f"{k} {v:.1%}" for k, v in bad.items()) + f" top-1 agreement on the calibration images "
            f"(< --min-agreement {min_agreement:g})")
    return ", ".join(f"{k} agrees with float32 on {v:.1%}" for k, v in agreement.items()) + \
        f" of {len(expected)} calibration images"


def run(argv=None):
    """Exports and checks, prints what was written; returns ``--out``. Raises the library's errors (``--out`` is
    then left as it was)."""
    args = parse_args(argv)
    if not args.out.lower().endswith(".onnx"):
        raise ValueError(f"--out must name an .onnx file, got {args.out}")
    start = time.time()
    folder, name = os.path.split(os.path.abspath(args.out))
    unchecked = os.path.join(folder, f".{name}.{os.getpid()}.unchecked.onnx")  # becomes --out once it passed
    try:
        net = build(args)
        if args.dtype not in ("float32", "int8"):
            raise ValueError(f"--dtype {args.dtype}: the file is float32 or int8 (bfloat16 is OpenVINO's choice at "
                             f"run time: --backend openvino --dtype bfloat16 on the float32 file)")
        model, info = onnx_model(net)
        size = info.data_config.input_size
        batches = None
        if args.dtype == "int8":
            calibration = optimize_kwargs(args, info.data_config, args.batch_size)
            batches = calibration_batches(calibration["calib_data"], calibration["num_calib_batches"])
            model = quantize_onnx(model, **{**calibration, "calib_data": batches})
        atomic_write(unchecked, lambda tmp: onnx.save(model, tmp))
        line = (f"wrote {args.out}: {info.model} {args.dtype}, {info.num_classes} classes, {size} x {size} px, "
                f"{os.path.getsize(unchecked) / 2**20:.1f} MB in {time.time() - start:.1f} s")
        if not args.no_check:
            line += "; " + (check_int8(unchecked, net, batches, args.min_agreement) if batches else
                            check_float32(unchecked, net, size, args.tolerance, args.seed))
        os.replace(unchecked, args.out)
    except Exception as err:
        if os.path.exists(args.out):
            add_note(err, f"({args.out} left as it was)")
        raise
    finally:
        if os.path.exists(unchecked):
            os.remove(unchecked)
    print(line)
    return args.out


def main(argv=None):
    """The exit code of :func:`run`: 0, or a known failure's, its message one line on stderr."""
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
