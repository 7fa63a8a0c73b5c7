"""Top-1 agreement of the low-precision inference paths with float32 on a real validation set.

    .venv/bin/python -m benchmarks.agreement --rec-val out/demo/data/rec/val.rec \
        --params out/demo/train/ckpt-0007.params --calib-rec out/demo/data/rec/train.rec

The model, classes and evaluation transform come with the checkpoint (``--model`` / ``--crop-size`` ... override
or, for a bare ``.params``, say them). Each dtype (default float32, bfloat16 where the CPU has AVX-512, int8) is
built with ``resnest_gluon.optimize`` (int8 calibrated on ``--calib-rec``, never on the evaluation set), every
validation image is classified, and the top-1 of each dtype and its agreement with float32 (same predicted class)
are printed and written to ``OUT/agreement.json``. AMX is enabled first, as ``optimize`` does, so bfloat16 and int8
run as they would in production.

``--backend onnxruntime`` / ``openvino`` runs every dtype in that engine instead (the ``.onnx`` file given as
``--params``, or the network exported on the fly; default dtypes: what the engine offers on this CPU), and the
engine's float32 is the reference.
"""
import argparse
import os
import sys

if __name__ == "__main__" and not __package__:  # run as a file: rerun as python -m benchmarks.agreement
    import _launch  # the script's folder is sys.path[0] when Python runs a file

    _launch.run_as_module(__file__)

from ._launch import ROOT as REPO  # noqa: E402


def build_parser():
    from resnest_gluon.cli import (add_backend_arguments, add_data_config_arguments, add_model_arguments,
                                   add_precision_arguments)

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rec-val", required=True, help="validation .rec (its .idx next to it, if any)")
    add_model_arguments(p, pretrained=False)
    add_data_config_arguments(p)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtypes", nargs="+", default=None,
                   help="float32 first: the reference the others are compared with (default: float32, bfloat16 "
                        "where the CPU has it (AVX-512), int8)")
    add_precision_arguments(p)
    add_backend_arguments(p)
    p.add_argument("--out", default=os.path.join(REPO, "out", "agreement"), help="folder for agreement.json")
    return p


def predictions(args, dtype, info):
    """(predicted classes, labels) of every validation image, in record order, for one dtype."""
    import mxnet as mx
    import numpy as np

    from resnest_gluon import optimize
    from resnest_gluon.cli import optimize_kwargs
    from resnest_gluon.data import ValRecordIter
    from resnest_gluon.deploy import input_dtype

    from resnest_gluon.deploy import NDArrayCalls, engine_for
    from resnest_gluon.trained import is_onnx

    args.dtype = dtype
    cfg = info.data_config
    net = None if is_onnx(args.params) else info.load(args.params, mx.cpu())
    if args.backend == "mxnet":
        net = optimize(net, dtype, mx.cpu(), input_shape=(args.batch_size, 3, cfg.input_size, cfg.input_size),
                       **optimize_kwargs(args, cfg, args.batch_size))
    else:
        net = NDArrayCalls(engine_for(info, args.backend, args.params, net, args.threads, dtype,
                                      **optimize_kwargs(args, cfg, args.batch_size)))
    data = ValRecordIter(args.rec_val, cfg, batch_size=args.batch_size, num_workers=1,
                         dtype=input_dtype(dtype) if args.backend == "mxnet" else "float32")
    preds, labels = [], []
    for x, y in data:
        preds.append(net(x).astype("float32").asnumpy().argmax(axis=1))
        labels.append(y.asnumpy().astype(np.int64))
    if data.corrupt:
        print(f"[agreement] {dtype}: skipped corrupt records {data.corrupt}", file=sys.stderr)
    return np.concatenate(preds), np.concatenate(labels)


def default_dtypes(backend):
    """float32, then each lower precision ``backend`` runs on this CPU."""
    from resnest_gluon.deploy.amx import bfloat16_supported
    from resnest_gluon.deploy.engines import ENGINE_DTYPES, engine_bfloat16_supported

    if backend == "mxnet":
        if not bfloat16_supported():
            print("no bfloat16: this CPU has no AVX-512 (MXNet 1.9.1's oneDNN has no bfloat16 convolutions for it)")
        return ["float32"] + (["bfloat16"] if bfloat16_supported() else []) + ["int8"]
    dtypes = list(ENGINE_DTYPES[backend])
    if "bfloat16" in dtypes and not engine_bfloat16_supported(backend):
        print(f"no bfloat16: {backend} has no bfloat16 instructions to use on this CPU (AVX-512 BF16 or AMX)")
        dtypes.remove("bfloat16")
    return dtypes


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from resnest_gluon.trained import is_onnx

    args.backend = args.backend or ("onnxruntime" if is_onnx(args.params) else "mxnet")
    if args.dtypes is None:
        args.dtypes = default_dtypes(args.backend)
    if args.dtypes[0] != "float32":
        parser.error("--dtypes must start with float32 (the reference)")
    for path, flag in ((args.rec_val, "--rec-val"), (args.params, "--params")):
        if not os.path.isfile(path):
            parser.error(f"{flag}: file not found: {path!r}")
    from resnest_gluon.deploy.amx import enable_amx

    amx = enable_amx()  # before any oneDNN operator runs in this process
    from resnest_gluon.atomic import write_json
    from resnest_gluon.cli import model_info

    try:
        info = model_info(args)
    except ValueError as err:
        parser.error(str(err))
    results, reference = {}, None
    for dtype in args.dtypes:
        try:
            pred, labels = predictions(args, dtype, info)
        except (ValueError, ImportError) as err:
            parser.error(f"{dtype}: {err}")
        reference = pred if reference is None else reference
        results[dtype] = {"images": int(len(pred)), "top1": float((pred == labels).mean()),
                          "agreement_with_float32": float((pred == reference).mean()),
                          "disagreements": int((pred != reference).sum())}
        r = results[dtype]
        print(f"{dtype:9s} images {r['images']}  top-1 {100 * r['top1']:.2f}%  agreement with float32 "
              f"{100 * r['agreement_with_float32']:.2f}% ({r['disagreements']} differ)", flush=True)
    doc = {"schema": "resnest-gluon/agreement/1", "model": info.model, "params": args.params, "rec": args.rec_val,
           "backend": args.backend,
           "input_size": info.data_config.input_size, "data_config": info.data_config.to_dict(), "amx": amx,
           "calibration": {"rec": args.calib_rec, "mode": args.calib_mode, "batches": args.num_calib_batches,
                           "batch_size": args.batch_size, "exclude_first_conv": args.exclude_first_conv},
           "results": results}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "agreement.json")
    write_json(path, doc)
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
