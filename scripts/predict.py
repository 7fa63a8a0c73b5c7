"""Top-k classes of image files with a ResNeSt, through the model's evaluation protocol.

    python scripts/predict.py cat.jpg dog.png --model resnest50 --pretrained --topk 5 --json out.json
    python scripts/predict.py photos/*.jpg --params runs/x/ckpt-0007.params     # its model, classes and size
    python scripts/predict.py img.jpg --model resnest50 --pretrained --dtype int8 --calib-rec train.rec
    python scripts/predict.py img.jpg --params resnest50.onnx --backend openvino   # scripts/export_onnx.py's file

Prints one block per image; ``--json`` writes ``{"model", "params", "data_config", "topk", "predictions":
[{"image", "top": [{"rank", "label", "class", "probability"}]}], "skipped": [{"image", "reason"}]}``.
A missing, unreadable or non-image file is reported by name and skipped, the others are still predicted, and the
exit status is then 3 (0: every image predicted). Nothing could be done (:mod:`resnest_gluon.exits`): 2 with one line
``error: ...`` naming the file, flag or model (a wrong weights file, unusable flags); 8 when ``--pretrained``
weights cannot be had (offline, mirror, SHA-1).
"""
import sys

from resnest_gluon.atomic import write_json
from resnest_gluon.cli import (add_backend_arguments, add_data_config_arguments, add_model_arguments,
                               add_precision_arguments, model_info, optimize_kwargs)
from resnest_gluon.data import load_image
from resnest_gluon.exits import EXIT_SKIPPED, ArgumentParser, report_skipped, run_script
from resnest_gluon.predict import Predictor


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", help="image files")
    add_model_arguments(p)
    add_data_config_arguments(p)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", help="also write the predictions to this JSON file")
    add_precision_arguments(p)
    add_backend_arguments(p)
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (and per int8 calibration "
                                                              "batch)")
    return p.parse_args(argv)


def read_images(paths):
    """``(decoded images, their paths, [(path, reason)] of the ones that could not be read)``."""
    images, kept, skipped = [], [], []
    for path in paths:
        try:
            images.append(load_image(path))
            kept.append(path)
        except (OSError, ValueError) as err:
            skipped.append((path, str(err)))
    return images, kept, skipped


def run(argv=None):
    """Predicts, prints, writes ``--json``; returns the report (its ``skipped`` lists the files left out). Raises the
    library's errors."""
    args = parse_args(argv)
    info = model_info(args)
    calibration = optimize_kwargs(args, info.data_config, args.batch_size)
    predictor = Predictor(info.model, params=args.params, pretrained=args.pretrained,
                          classes=list(info.class_names) if info.class_names else None, dtype=args.dtype,
                          data_config=info.data_config, backend=args.backend, threads=args.threads, **calibration)
    results, kept, skipped = [], [], []
    for start in range(0, len(args.images), args.batch_size):  # decoded a batch at a time
        images, ok, bad = read_images(args.images[start:start + args.batch_size])
        results += predictor.predict(images, topk=args.topk)
        kept, skipped = kept + ok, skipped + bad
    index = {name: i for i, name in enumerate(predictor.names)}
    report = {"model": predictor.info.model, "params": args.params, "pretrained": args.pretrained,
              "data_config": predictor.config.to_dict(), "topk": args.topk, "dtype": args.dtype,
              "backend": predictor.backend, "predictions": [],
              "skipped": [{"image": p, "reason": r} for p, r in skipped]}
    for image, top in zip(kept, results):
        print(image)
        for rank, (name, prob) in enumerate(top, 1):
            print(f"  {rank}. {prob:8.4f}  {name}")
        report["predictions"].append({"image": image, "top": [
            {"rank": r, "label": index[n], "class": n, "probability": p} for r, (n, p) in enumerate(top, 1)]})
    if args.json:
        write_json(args.json, report)
    report_skipped(skipped, len(args.images))
    return report


def main(argv=None):
    """The exit code: 0, 3 when files were skipped, or a known failure's, its message one line on stderr."""
    return run_script(lambda: EXIT_SKIPPED if run(argv)["skipped"] else 0)


if __name__ == "__main__":
    sys.exit(main())
