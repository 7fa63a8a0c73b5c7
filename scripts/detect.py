"""Objects in image files with a trained detector (Faster / Mask R-CNN FPN on ResNeSt): pictures and a JSON report.

    python scripts/detect.py street.jpg photos/*.jpg --params runs/det/final.params --threshold 0.5 --out drawn/

The model, its classes and its evaluation transform come with ``--params`` (its ``.json``). For each image,
``OUT/<name>.png`` shows the boxes (and masks) with class and score; ``OUT/detections.json`` (or ``--json``) holds
``{"model", "params", "data_config", "class_names", "threshold", "results": [{"image", "width", "height",
"drawing", "objects": [{"label", "class", "score", "box": [x1, y1, x2, y2], ("mask_rle", "mask_png",
"mask_pixels")}]}], "skipped": [{"image", "reason"}]}`` with boxes in the image's pixels. A Mask R-CNN's masks are
drawn filled and translucent in the class's colour under the boxes; each object's whole mask is in the JSON as
``mask_rle``, COCO's compressed run-length encoding ``{"size": [height, width], "counts": "..."}`` (pycocotools:
``mask.decode({"size": s, "counts": c.encode()})`` gives the (H, W) mask back, overlaps included), and the masks are
also written as ``OUT/<name>_masks.png``, a palette image whose pixel value k + 1 marks object k (0: none; where
masks overlap the better object's).
A missing or undecodable image is reported and skipped (exit status 3); a wrong weights file or flag stops with 2 and
one line ``error: ...`` naming it (:mod:`resnest_gluon.exits`).
"""
import sys

import numpy as np

from resnest_gluon.dense.cli import add_dense_arguments, load_runner, run_images, save_png
from resnest_gluon.dense.detection_eval import encode_masks
from resnest_gluon.dense.drawing import class_map_image, draw_objects
from resnest_gluon.dense.inference import Detector
from resnest_gluon.exits import ArgumentParser, run_script


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    add_dense_arguments(p, "detections.json")
    p.add_argument("--threshold", type=float, default=0.5, help="lowest score shown (default 0.5)")
    return p.parse_args(argv)


def run(argv=None):
    """Runs the model on each image, writes the pictures and the report; returns the report, or exits with 3 when an
    image was skipped. Raises the library's errors."""
    args = parse_args(argv)
    if not 0 <= args.threshold <= 1:
        raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
    detector = load_runner(Detector, args)

    def handle(path, image, stem):
        objects = detector.detect(image, threshold=args.threshold)
        entry = {"drawing": stem + ".png", "objects": []}
        save_png(draw_objects(image, objects), entry["drawing"])
        masks = [obj.pop("mask") for obj in objects if "mask" in obj]
        if masks:
            instances = np.zeros(image.shape[:2], np.int32)
            for k in reversed(range(len(masks))):  # the best object wins where masks overlap
                instances[masks[k]] = k + 1
            save_png(class_map_image(np.minimum(instances, 255)), stem + "_masks.png")
            for k, (obj, rle) in enumerate(zip(objects, encode_masks(np.stack(masks)))):
                obj["mask_rle"] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
                obj["mask_png"], obj["mask_pixels"] = stem + "_masks.png", int((instances == k + 1).sum())
        entry["objects"] = objects
        counts = {}
        for obj in objects:
            counts[obj["class"]] = counts.get(obj["class"], 0) + 1
        return entry, f"{len(objects)} objects" + (" (" + ", ".join(f"{n} {c}" for c, n in counts.items()) + ")"
                                                   if counts else "")

    return run_images(args, detector, handle, "detections.json", "detecting", threshold=args.threshold)


def main(argv=None):
    """The exit code: 0, 3 when images were skipped, or a known failure's, its message one line on stderr."""
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
