"""Per-pixel classes of image files with a trained segmenter (DeepLabV3 on ResNeSt): colour-mapped masks and JSON.

    python scripts/segment.py street.jpg photos/*.jpg --params runs/seg/final.params --out masks/

The model, its classes and its evaluation transform come with ``--params`` (its ``.json``). For each image,
``OUT/<name>_mask.png`` is the class map as a palette PNG (pixel value = class index, coloured by class: read it
back with PIL to get the indices) and ``OUT/<name>_overlay.png`` the image with the colours blended in;
``OUT/segments.json`` (or ``--json``) holds ``{"model", "params", "data_config", "class_names", "results":
[{"image", "width", "height", "mask", "overlay", "classes": [{"label", "class", "fraction"}]}], "skipped": [...]}``,
the classes present, largest share of the pixels first.
A missing or undecodable image is reported and skipped (exit status 3); a wrong weights file or flag stops with 2 and
one line ``error: ...`` naming it (:mod:`resnest_gluon.exits`).
"""
import sys

import numpy as np

from resnest_gluon.dense.cli import add_dense_arguments, load_runner, run_images, save_png
from resnest_gluon.dense.drawing import class_map_image, overlay
from resnest_gluon.dense.inference import Segmenter
from resnest_gluon.exits import ArgumentParser, run_script


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    add_dense_arguments(p, "segments.json")
    return p.parse_args(argv)


def run(argv=None):
    """Runs the model on each image, writes the pictures and the report; returns the report, or exits with 3 when an
    image was skipped. Raises the library's errors."""
    args = parse_args(argv)
    segmenter = load_runner(Segmenter, args)
    if len(segmenter.names) > 256:
        raise ValueError(f"{args.params}: {len(segmenter.names)} classes do not fit a palette PNG (256 at most)")

    def handle(path, image, stem):
        labels = segmenter.segment(image)
        entry = {"mask": stem + "_mask.png", "overlay": stem + "_overlay.png"}
        save_png(class_map_image(labels), entry["mask"])
        save_png(overlay(image, labels), entry["overlay"])
        counts = np.bincount(labels.ravel(), minlength=len(segmenter.names))
        order = [int(k) for k in np.argsort(-counts, kind="stable") if counts[k]]
        entry["classes"] = [{"label": k, "class": segmenter.names[k], "fraction": float(counts[k] / labels.size)}
                            for k in order]
        top = ", ".join(f"{c['class']} {100 * c['fraction']:.1f}%" for c in entry["classes"][:3])
        return entry, f"{len(order)} classes ({top})"

    return run_images(args, segmenter, handle, "segments.json", "segmenting")


def main(argv=None):
    """The exit code: 0, 3 when images were skipped, or a known failure's, its message one line on stderr."""
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
