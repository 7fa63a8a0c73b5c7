"""What ``scripts/detect.py`` and ``scripts/segment.py`` share: their flags, the loop over image files, the report
(``scripts/eval_detection.py`` shares the model's flags and loading).

A trained dense model's file carries its model, classes and transform (:mod:`resnest_gluon.trained`), so
``--params`` alone is enough; ``--short`` / ``--max-size`` replace the transform's sizes. A missing or undecodable
image is reported by name and skipped, the others are still done, and the exit status is then 3.
"""
import os
import sys

from tqdm import tqdm

from ..atomic import atomic_write, write_json
from ..data.transforms import load_image
from ..exits import EXIT_SKIPPED, report_skipped
from ..trained import load_class_names

__all__ = ["EXIT_SKIPPED", "add_dense_arguments", "add_dense_model_arguments", "add_device_arguments",
           "add_output_arguments", "device_context", "load_runner", "output_names", "run_images", "save_png"]


def add_dense_arguments(parser, report_name):
    """Adds ``images``, the model's flags (:func:`add_dense_model_arguments`), ``--out`` and ``--json``."""
    parser.add_argument("images", nargs="+", help="image files")
    add_dense_model_arguments(parser)
    add_output_arguments(parser, report_name, "predictions", "the pictures")


def add_dense_model_arguments(parser):
    """Adds ``--params``, ``--model``, ``--classes``, ``--short``, ``--max-size``: the trained model and its
    transform's sizes (what :func:`load_runner` reads)."""
    parser.add_argument("--params", required=True,
                        help="trained weights (.params with its .json: model, classes and transform come with it)")
    parser.add_argument("--model", help="model name, for a bare .params without its .json (must agree otherwise)")
    parser.add_argument("--classes", help="class names, one per line, for a bare .params (must agree otherwise)")
    parser.add_argument("--short", type=int, help="resize the short side to this (default: the model's transform)")
    parser.add_argument("--max-size", type=int, help="longest side after resizing (default: the model's)")


def add_output_arguments(parser, report_name, folder, what):
    """Adds ``--out`` (default ``folder``, for ``what``) and ``--json`` (default ``OUT/report_name``)."""
    parser.add_argument("--out", default=folder, help=f"folder for {what} (default: {folder})")
    parser.add_argument("--json", help=f"the report (default: OUT/{report_name})")


def add_device_arguments(parser):
    """Adds ``--gpus``, ``--no-cuda`` and ``--horovod``: where an evaluation script runs (:func:`device_context`)."""
    parser.add_argument("--gpus", default="", help="GPU id(s); one image at a time runs on the first (under Horovod: "
                                                   "one per rank); empty = CPU")
    parser.add_argument("--no-cuda", action="store_true", help="evaluate on CPU")
    parser.add_argument("--horovod", action="store_true", help="force Horovod (auto under horovodrun)")


def device_context(args, dist):
    """CPU unless ``--gpus`` asks for GPUs; under Horovod one GPU per process (its local rank)."""
    import mxnet as mx

    gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
    if args.no_cuda or not gpus:
        return mx.cpu()
    if mx.context.num_gpus() == 0:
        raise ValueError(f"--gpus {args.gpus} given but MXNet sees no GPU (pass --no-cuda to evaluate on CPU)")
    return mx.gpu(gpus[dist.local_rank % len(gpus)])


def load_runner(runner_class, args, ctx=None):
    """The runner (:class:`~resnest_gluon.dense.inference.Detector` or ``Segmenter``) the flags describe, on
    ``ctx`` (default CPU)."""
    if not os.path.isfile(args.params):
        raise FileNotFoundError(f"--params: file not found: {args.params!r}")
    for flag in ("short", "max_size"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    names = load_class_names(args.classes) if args.classes else None
    return runner_class(args.params, ctx=ctx, model=args.model, class_names=names, short=args.short,
                        max_size=args.max_size)


def output_names(paths, folder, suffix):
    """One output path per image, ``folder/<stem><suffix>``; repeated stems get ``-2``, ``-3``, ..."""
    seen, names = {}, []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        seen[stem] = seen.get(stem, 0) + 1
        names.append(os.path.join(folder, f"{stem}{'' if seen[stem] == 1 else '-%d' % seen[stem]}{suffix}"))
    return names


def save_png(picture, path):
    """Writes a PIL image as PNG, complete or not at all."""
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def run_images(args, runner, handle, report_name, what, **settings):
    """Calls ``handle(path, image, out_stem) -> (entry for the report, one-line summary)`` for every image, with a
    progress bar; writes the report (``{"model", "params", "data_config", "class_names", **settings, "results",
    "skipped"}``) and exits with 3 when an image was skipped."""
    os.makedirs(args.out, exist_ok=True)
    results, skipped = [], []
    stems = output_names(args.images, args.out, "")
    bar = tqdm(list(zip(args.images, stems)), desc=what, unit="img", disable=len(args.images) < 2, leave=False)
    for path, stem in bar:
        try:
            image = load_image(path)
        except (OSError, ValueError) as err:
            skipped.append({"image": path, "reason": str(err)})
            continue
        entry, line = handle(path, image, stem)
        results.append({"image": path, "width": int(image.shape[1]), "height": int(image.shape[0]), **entry})
        bar.write(f"{path}: {line}")
    report = {"model": runner.info.model, "params": args.params, "data_config": runner.config.to_dict(),
              "class_names": runner.names, **settings, "results": results, "skipped": skipped}
    write_json(args.json or os.path.join(args.out, report_name), report)
    if skipped:
        report_skipped([(item["image"], item["reason"]) for item in skipped], len(args.images))
        sys.exit(EXIT_SKIPPED)
    return report
