"""The command-line flags that choose an inference precision, shared by ``scripts/verify.py`` and
``scripts/predict.py``: ``--dtype`` and int8's calibration (named as in MXNet's and GluonCV's quantization scripts).
"""
import os

from .deploy import CALIB_MODES, DTYPES

__all__ = ["add_precision_arguments", "optimize_kwargs"]


def add_precision_arguments(parser):
    """Adds ``--dtype``, ``--calib-rec``, ``--calib-mode``, ``--num-calib-batches`` and ``--exclude-first-conv``."""
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="inference precision; bfloat16 and int8 run on CPU (oneDNN), float16 on GPU")
    parser.add_argument("--calib-rec", help="int8: a .rec whose first images calibrate the quantization, read with "
                        "the evaluation transform (use training or held-out images: calibrating on the evaluation "
                        "set itself gives an optimistic accuracy)")
    parser.add_argument("--calib-mode", default="naive", choices=CALIB_MODES,
                        help="int8: naive = the observed min/max of each layer, entropy = the KL-divergence threshold")
    parser.add_argument("--num-calib-batches", type=int, default=5,
                        help="int8: calibration batches of --batch-size images (default 5)")
    parser.add_argument("--exclude-first-conv", action="store_true",
                        help="int8: keep the stem's first convolution in float32")


def optimize_kwargs(args, data_config, batch_size):
    """The calibration keywords of :func:`~resnest_gluon.deploy.optimize` for ``args`` (empty unless int8);
    ``ValueError`` naming the flag when one is missing or wrong."""
    if args.dtype != "int8":
        return {}
    from .data import ValRecordIter

    if not args.calib_rec:
        raise ValueError("--dtype int8 needs --calib-rec: a .rec of images to calibrate the quantization on")
    if not os.path.isfile(args.calib_rec):
        raise ValueError(f"--calib-rec: record file (.rec) not found: {args.calib_rec!r}")
    if args.num_calib_batches < 1:
        raise ValueError(f"--num-calib-batches must be >= 1, got {args.num_calib_batches}")
    data = ValRecordIter(args.calib_rec, data_config, batch_size=batch_size, num_workers=1)
    return {"calib_data": data, "calib_mode": args.calib_mode, "num_calib_batches": args.num_calib_batches,
            "exclude_first_conv": args.exclude_first_conv}
