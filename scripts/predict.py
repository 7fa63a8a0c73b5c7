"""Top-k classes of image files with a ResNeSt, through the model's evaluation protocol.

    python scripts/predict.py cat.jpg dog.png --model resnest50 --pretrained --topk 5 --json out.json
    python scripts/predict.py img.jpg --model resnest50 --params finetuned.params --classes names.txt
    python scripts/predict.py img.jpg --model resnest50 --pretrained --dtype int8 --calib-rec train.rec

Prints one block per image; ``--json`` writes ``{"model", "params", "classes_file", "topk", "predictions":
[{"image", "top": [{"rank", "label", "class", "probability"}]}]}``.
"""
import argparse
import sys

from resnest_gluon.atomic import write_json
from resnest_gluon.precision_cli import add_precision_arguments, optimize_kwargs
from resnest_gluon.predict import IMAGENET_CLASSES_FILE, Predictor
from resnest_gluon.zoo import get_config


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--model", default="resnest50")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--params", help="a .params file (its classifier size sets the number of classes)")
    src.add_argument("--pretrained", action="store_true", help="the published ImageNet weights")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--classes", help="class names, one per line (default: the shipped ImageNet-1k names)")
    p.add_argument("--json", help="also write the predictions to this JSON file")
    add_precision_arguments(p)
    p.add_argument("--batch-size", type=int, default=16, help="int8: images per calibration batch")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        calibration = optimize_kwargs(args, get_config(args.model).data, args.batch_size)
        predictor = Predictor(args.model, params=args.params, pretrained=args.pretrained, classes=args.classes,
                              dtype=args.dtype, **calibration)
        results = predictor.predict(args.images, topk=args.topk)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    index = {name: i for i, name in enumerate(predictor.names)}
    report = {"model": args.model, "params": args.params, "pretrained": args.pretrained,
              "classes_file": args.classes or IMAGENET_CLASSES_FILE, "topk": args.topk, "dtype": args.dtype,
              "predictions": []}
    for image, top in zip(args.images, results):
        print(image)
        for rank, (name, prob) in enumerate(top, 1):
            print(f"  {rank}. {prob:8.4f}  {name}")
        report["predictions"].append({"image": image, "top": [
            {"rank": r, "label": index[n], "class": n, "probability": p} for r, (n, p) in enumerate(top, 1)]})
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
