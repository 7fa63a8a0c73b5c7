"""Command-line flags shared by ``scripts/verify.py``, ``scripts/predict.py`` and ``benchmarks/agreement.py``,
defined once: which model and weights (``--model``, ``--params``, ``--pretrained``, ``--num-classes``,
``--classes``), the evaluation data config (``--crop-size``, ``--crop-ratio``, ``--interpolation``) and the
inference precision (``--dtype`` and int8's calibration, named as in MXNet's and GluonCV's quantization scripts).

A trained weights file carries its model, classes and data config (:mod:`resnest_gluon.trained`), so
``--params runs/x/ckpt-0007.params`` alone is enough; the flags override or, for model and classes, must agree.
"""
import os

from .data.val import ValRecordIter
from .deploy import BACKENDS, CALIB_MODES, DTYPES
from .deploy.onnx_quantize import onnx_precision
from .trained import is_onnx, resolve

__all__ = ["add_model_arguments", "add_data_config_arguments", "data_config_changes", "model_info",
           "add_backend_arguments", "add_precision_arguments", "optimize_kwargs"]


def add_model_arguments(parser, pretrained=True, weights_required=True):
    """Adds ``--model``, ``--params`` (and ``--pretrained``, one of the two required unless ``weights_required``
    is false), ``--num-classes``, ``--classes``."""
    parser.add_argument("--model", help="model name (default: the one --params was trained as; resnest50 for "
                                        "--pretrained or a bare .params without its .json)")
    src = parser.add_mutually_exclusive_group(required=weights_required) if pretrained else parser
    src.add_argument("--params", required=weights_required and not pretrained,
                     help="trained weights: a checkpoint (ckpt-NNNN.params), a .params file with its .json, an "
                          "exported P-0000.params, or an .onnx file (scripts/export_onnx.py; --backend onnxruntime "
                          "or openvino); its model, classes and data config come with it")
    if pretrained:
        src.add_argument("--pretrained", action="store_true", help="the published ImageNet weights")
    parser.add_argument("--num-classes", type=int,
                        help="classifier size (default: the weights file's; must agree with it when given)")
    parser.add_argument("--classes", help="class names, one per line (default: the weights file's own, or the "
                                          "ImageNet-1k names for 1000 classes)")


def add_data_config_arguments(parser):
    """Adds ``--crop-size``, ``--crop-ratio``, ``--interpolation``: replacements for the data config's values."""
    parser.add_argument("--crop-size", type=int, help="input size (default: the weights' data config, e.g. the "
                                                      "size training validated at)")
    parser.add_argument("--crop-ratio", type=float, help="centre-crop ratio crop_pct (default: the data config's)")
    parser.add_argument("--interpolation", choices=("bilinear", "bicubic"),
                        help="resize interpolation (default: the data config's)")


def data_config_changes(args):
    """``{field: value}`` of the data-config flags given; ``ValueError`` naming a flag out of range."""
    if args.crop_size is not None and args.crop_size < 1:
        raise ValueError(f"--crop-size must be positive, got {args.crop_size}")
    if args.crop_ratio is not None and not 0 < args.crop_ratio <= 1:
        raise ValueError(f"--crop-ratio must be in (0, 1], got {args.crop_ratio}")
    changes = {"input_size": args.crop_size, "crop_pct": args.crop_ratio, "interpolation": args.interpolation}
    return {k: v for k, v in changes.items() if v is not None}


def model_info(args):
    """The :class:`~resnest_gluon.trained.ModelInfo` the flags describe (see :func:`resnest_gluon.trained.resolve`);
    ``ValueError`` / ``FileNotFoundError`` naming the file or the contradiction. An unset ``--dtype`` becomes the
    weights' own precision here."""
    if args.params and not os.path.isfile(args.params):
        raise FileNotFoundError(f"--params: file not found: {args.params!r}")
    if args.num_classes is not None and args.num_classes < 1:
        raise ValueError(f"--num-classes must be >= 1, got {args.num_classes}")
    if getattr(args, "dtype", "float32") is None:  # what the file is (a quantized .onnx: int8), else float32
        args.dtype = "float32"
        if args.params and is_onnx(args.params):
            args.dtype = onnx_precision(args.params)
    return resolve(args.params, args.model, args.num_classes, args.classes, data_config_changes(args),
                   pretrained=getattr(args, "pretrained", False))


def add_backend_arguments(parser):
    """Adds ``--backend`` (mxnet, onnxruntime, openvino) and ``--threads`` (the engines' thread count)."""
    parser.add_argument("--backend", choices=BACKENDS,
                        help="inference engine (default: mxnet; onnxruntime for an .onnx --params): onnxruntime and "
                             "openvino run the .onnx file, or the network exported to ONNX on the fly")
    parser.add_argument("--threads", type=int, help="onnxruntime / openvino: threads per inference (default: the "
                                                    "engine's own choice)")


def add_precision_arguments(parser):
    """Adds ``--dtype``, ``--calib-rec``, ``--calib-mode``, ``--num-calib-batches`` and ``--exclude-first-conv``."""
    parser.add_argument("--dtype", choices=DTYPES,
                        help="inference precision (default: float32; an .onnx file's own); bfloat16 and int8 run on "
                             "CPU, float16 on GPU")
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
    """The calibration keywords of :func:`~resnest_gluon.deploy.optimize` for ``args`` (empty unless int8, and for
    an ONNX file quantized already);
    ``ValueError`` naming the flag when one is missing or wrong."""
    if args.dtype != "int8":
        return {}
    params = getattr(args, "params", None)
    if params and is_onnx(params) and os.path.isfile(params):
        if onnx_precision(params) == "int8":
            return {}  # quantized already
    if not args.calib_rec:
        raise ValueError("--dtype int8 needs --calib-rec: a .rec of images to calibrate the quantization on")
    if not os.path.isfile(args.calib_rec):
        raise ValueError(f"--calib-rec: record file (.rec) not found: {args.calib_rec!r}")
    if args.num_calib_batches < 1:
        raise ValueError(f"--num-calib-batches must be >= 1, got {args.num_calib_batches}")
    data = ValRecordIter(args.calib_rec, data_config, batch_size=batch_size, num_workers=1)
    return {"calib_data": data, "calib_mode": args.calib_mode, "num_calib_batches": args.num_calib_batches,
            "exclude_first_conv": args.exclude_first_conv}
