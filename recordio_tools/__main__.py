"""Command line: ``python -m recordio_tools {make-list,pack,pack-detection,pack-segmentation,inspect,check} ...``
(see each ``--help``).
"""
import argparse
import errno
import json
import logging
import os
import sys

from . import images, listing

# packing/checking import MXNet (seconds); make-list does not need it, so they are imported on use.

log = logging.getLogger("recordio_tools")

EXIT_BAD_DATA = 1  # check/inspect found problems
EXIT_USAGE = 2  # bad arguments or unusable input
EXIT_DISK_FULL = 4  # no space left writing an output (as scripts/train_imagenet.py); the previous files are kept


_COMMON = argparse.ArgumentParser(add_help=False)
_COMMON.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def _add_make_list(sub):
    p = sub.add_parser("make-list", parents=[_COMMON],
                       help="class-per-folder tree -> im2rec .lst (+ PREFIX_classes.txt)",
                       description="Writes PREFIX.lst (or PREFIX_train.lst + PREFIX_val.lst with --val-ratio) "
                       "and PREFIX_classes.txt. Labels = position of the folder in the sorted folder list, "
                       "empty folders included.")
    p.add_argument("root", help="folder with one sub-folder per class")
    p.add_argument("prefix", help="output prefix, e.g. data/train")
    p.add_argument("--exts", nargs="+", default=list(listing.DEFAULT_EXTS),
                   help="file extensions to list, case-insensitive (default: %(default)s)")
    p.add_argument("--shuffle", action="store_true", help="shuffle line order (indices stay with their images)")
    p.add_argument("--seed", type=int, default=0, help="seed for --shuffle and --val-ratio (default 0)")
    p.add_argument("--val-ratio", type=float, default=0.0,
                   help="also split into _train/_val lists, stratified per class (default: no split)")
    p.set_defaults(func=_run_make_list)


def _add_pack(sub):
    p = sub.add_parser("pack", parents=[_COMMON],
                       help=".lst or class tree -> PREFIX.rec + PREFIX.idx + PREFIX.report.json",
                       description="Decodes, converts to RGB, optionally resizes and re-encodes every listed "
                       "image; bad files are skipped and reported, never packed with a wrong label.")
    p.add_argument("source", help="an im2rec .lst file, or a class-per-folder tree (then PREFIX.lst is written)")
    p.add_argument("prefix", help="output prefix: writes PREFIX.rec, PREFIX.idx, PREFIX.report.json")
    p.add_argument("--root", help="folder the .lst paths are relative to (default: the .lst's folder)")
    p.add_argument("--exts", nargs="+", default=list(listing.DEFAULT_EXTS), help="extensions when packing a tree")
    p.add_argument("--resize", type=int, default=0, help="shorter side in pixels (default 0: keep size)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality 1..100 (default 95)")
    p.add_argument("--encoding", default=".jpg", choices=[".jpg", ".png"], help="record image encoding")
    p.add_argument("--png-compression", type=int, default=3, help="PNG compression 0..9 with --encoding .png")
    p.add_argument("--pass-through", action="store_true",
                   help="keep the original bytes of valid RGB JPEGs (others are converted and re-encoded)")
    p.add_argument("--max-pixels", type=int, default=images.DEFAULT_MAX_PIXELS,
                   help="decompression-bomb guard: images above this many pixels are decoded smaller (JPEG) "
                   "or skipped (default %(default)d)")
    p.add_argument("--skip-huge", action="store_true", help="skip images above --max-pixels instead of downscaling")
    p.add_argument("--num-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="decoding processes (default: CPUs - 1 = %(default)d); output is identical for any value")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_pack)


def _add_pack_detection(sub):
    p = sub.add_parser("pack-detection", parents=[_COMMON],
                       help="Pascal VOC folder or COCO json -> PREFIX.rec/.idx/_classes.txt/.report.json",
                       description="Packs detection data in im2rec's detection layout [2, 6, (class, x1/w, y1/h, "
                       "x2/w, y2/h, difficult) per object], read by mx.image.ImageDetIter and GluonCV's "
                       "RecordFileDetection. Boxes partly outside an image are clipped; bad boxes, unknown "
                       "classes and bad annotation files are dropped and reported. --masks also stores each "
                       "object's instance mask after the image (header label unchanged; see "
                       "resnest_gluon.data.detection_masks).")
    p.add_argument("source", help="VOC folder (Annotations/, JPEGImages/) or COCO instances .json")
    p.add_argument("prefix", help="output prefix")
    p.add_argument("--format", required=True, choices=["voc", "coco"], help="annotation format")
    p.add_argument("--root", help="image folder (COCO: default the json's folder; VOC: the VOC folder)")
    p.add_argument("--split", help="VOC: pack the ids of ImageSets/Main/SPLIT.txt, with --masks of "
                   "ImageSets/Segmentation/SPLIT.txt (default: every annotation, with --masks every "
                   "SegmentationObject/*.png)")
    p.add_argument("--classes", help="class names, one a line (line i = class id i); other classes are dropped "
                   "and reported (default: VOC sorted names found, COCO its categories in id order)")
    empty = p.add_mutually_exclusive_group()
    empty.add_argument("--keep-empty", dest="keep_empty", action="store_true",
                       help="pack images without objects (label [2, 6]; GluonCV's RecordFileDetection rejects them)")
    empty.add_argument("--drop-empty", dest="keep_empty", action="store_false",
                       help="skip and report images without objects (default)")
    p.add_argument("--masks", action="store_true",
                   help="also store one lossless binary mask per kept object (mask i for box i), from VOC's "
                   "SegmentationObject PNGs or COCO's segmentation polygons/RLE; objects without a usable mask are "
                   "dropped and reported")
    p.add_argument("--resize", type=int, default=0, help="shorter side in pixels (default 0: keep size); masks are "
                   "resized nearest-neighbour")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality 1..100 (default 95)")
    p.add_argument("--encoding", default=".jpg", choices=[".jpg", ".png"], help="record image encoding")
    p.add_argument("--max-pixels", type=int, default=images.DEFAULT_MAX_PIXELS, help="decompression-bomb guard")
    p.add_argument("--num-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="decoding processes (default %(default)d); output is identical for any value")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_pack_detection, keep_empty=False)


def _add_pack_segmentation(sub):
    p = sub.add_parser("pack-segmentation", parents=[_COMMON],
                       help="Pascal VOC or ADE20K segmentation folder -> PREFIX.rec/.idx/_classes.txt/.report.json",
                       description="Packs each image with its class mask (one record: the image, then a "
                       "single-channel 8-bit PNG mask), read by resnest_gluon.data.SegmentationRecordDataset. "
                       "Label conventions: VOC's SegmentationClass PNGs hold the class index (palette index), 255 "
                       "= not counted, and are stored as they are; ADE20K's annotations hold class + 1, 0 = "
                       "unlabelled, and are stored as value - 1 with 0 -> 255. So every record's mask is: class "
                       "index, 255 = not counted (at most 255 classes). Missing/undecodable images or masks, RGB "
                       "masks, masks of another size and mask values the class names do not cover are skipped and "
                       "reported.")
    p.add_argument("source", help="VOC folder (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/) or "
                   "ADEChallengeData2016 folder (images/, annotations/)")
    p.add_argument("prefix", help="output prefix: writes PREFIX.rec, PREFIX.idx, PREFIX_classes.txt, "
                   "PREFIX.report.json")
    p.add_argument("--format", required=True, choices=["voc", "ade20k"], help="dataset layout and mask convention")
    p.add_argument("--split", default="train", help="VOC: the ids of ImageSets/Segmentation/SPLIT.txt; ADE20K: "
                   "train or val (folders training/validation) (default: train)")
    p.add_argument("--classes", help="class names, one a line (line i = class i) (default: SOURCE/classes.txt if "
                   "present, else VOC's 21 or ADE20K's 150 names)")
    p.add_argument("--resize", type=int, default=0, help="shorter side in pixels (default 0: keep size); the mask "
                   "is resized nearest-neighbour (no new values)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality 1..100 (default 95)")
    p.add_argument("--encoding", default=".jpg", choices=[".jpg", ".png"], help="record image encoding (the mask "
                   "is always a lossless PNG)")
    p.add_argument("--max-pixels", type=int, default=images.DEFAULT_MAX_PIXELS, help="decompression-bomb guard")
    p.add_argument("--num-workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="decoding processes (default %(default)d); output is identical for any value")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_pack_segmentation)


def _add_check(sub, name, sample_default, help_text):
    p = sub.add_parser(name, parents=[_COMMON], help=help_text,
                       description=help_text + " Exit status 1 if any problem is found.")
    p.add_argument("prefix", help="reads PREFIX.rec and, if present, PREFIX.idx")
    p.add_argument("--sample", type=int, default=sample_default,
                   help="decode N random records (default: %s)" % ("all" if sample_default is None
                                                                   else sample_default))
    p.add_argument("--num-classes", type=int, help="labels must be integers in [0, K)")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample")
    p.add_argument("--num-workers", type=int, default=1, help="decoding processes (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--detection", action=argparse.BooleanOptionalAction, default=None,
                   help="records hold im2rec detection labels, or (--no-detection) class labels "
                   "(default: decided by the first record's label)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_check, full_histogram=(name == "inspect"))


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m recordio_tools", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_make_list(sub)
    _add_pack(sub)
    _add_pack_detection(sub)
    _add_pack_segmentation(sub)
    _add_check(sub, "inspect", 16, "Summarise a .rec: record count, label histogram, image sizes (decodes a sample).")
    _add_check(sub, "check", None, "Verify a .rec/.idx: framing, headers, labels, every image decodes, .idx offsets.")
    return parser


def _run_make_list(args):
    lists, classes, empty = listing.make_lists(args.root, args.prefix, exts=args.exts, shuffle=args.shuffle,
                                               seed=args.seed, val_ratio=args.val_ratio)
    for path, entries in lists.items():
        print("%s: %d images" % (path, len(entries)))
    print("%s: %d classes" % (listing.classes_path(args.prefix), len(classes)))
    if empty:
        print("WARNING: %d empty class folder(s) keep their label: %s" % (len(empty), ", ".join(empty)))
    return 0


def _run_pack(args):
    from . import packing

    options = packing.PackOptions(resize=args.resize, quality=args.quality, encoding=args.encoding,
                                  png_compression=args.png_compression, pass_through=args.pass_through,
                                  max_pixels=args.max_pixels, downscale_huge=not args.skip_huge)
    report = packing.pack(args.source, args.prefix, root=args.root, options=options, num_workers=args.num_workers,
                          exts=args.exts, progress=not args.no_progress)
    print("\n".join(report.summary()))
    print("wrote %s.rec, %s.idx, %s.report.json" % (args.prefix, args.prefix, args.prefix))
    return 0


def _run_pack_detection(args):
    from . import detection, packing

    options = packing.PackOptions(resize=args.resize, quality=args.quality, encoding=args.encoding,
                                  max_pixels=args.max_pixels)
    report = detection.pack_detection(args.source, args.prefix, args.format, root=args.root, split=args.split,
                                      classes_file=args.classes, keep_empty=args.keep_empty, options=options,
                                      num_workers=args.num_workers, progress=not args.no_progress,
                                      masks=args.masks)
    print("\n".join(report.summary()))
    print("wrote %s.rec, %s.idx, %s_classes.txt, %s.report.json" % ((args.prefix,) * 4))
    return 0


def _run_pack_segmentation(args):
    from . import packing, segmentation

    options = packing.PackOptions(resize=args.resize, quality=args.quality, encoding=args.encoding,
                                  max_pixels=args.max_pixels)
    report = segmentation.pack_segmentation(args.source, args.prefix, args.format, split=args.split,
                                            classes_file=args.classes, options=options,
                                            num_workers=args.num_workers, progress=not args.no_progress)
    print("\n".join(report.summary()))
    print("wrote %s.rec, %s.idx, %s_classes.txt, %s.report.json" % ((args.prefix,) * 4))
    return 0


def _run_check(args):
    from resnest_gluon.data import checking
    from .atomic import atomic_files

    summary = checking.check(args.prefix, sample=args.sample, num_classes=args.num_classes, seed=args.seed,
                             num_workers=args.num_workers, progress=not args.no_progress,
                             detection=args.detection)
    print("\n".join(checking.summary_lines(summary, None if args.full_histogram else 20)))
    if args.json:
        with atomic_files(args.json) as (tmp,), open(tmp, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
    return 0 if summary["ok"] else EXIT_BAD_DATA


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:  # ListError, PackError: unusable input
        print("error: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print("error: %s; no output file was replaced" % e, file=sys.stderr)
        return EXIT_DISK_FULL
    except KeyboardInterrupt:
        print("interrupted; no output file was replaced", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
