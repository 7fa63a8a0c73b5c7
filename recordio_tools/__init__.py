"""Build and verify MXNet RecordIO image datasets (``.lst`` -> ``.rec``/``.idx``) from class-per-folder trees,
detection datasets (Pascal VOC, COCO) in im2rec's detection layout (optionally with instance masks,
``resnest_gluon.data.detection_masks``), and semantic-segmentation datasets (Pascal VOC, ADE20K) as image +
class-mask records (``resnest_gluon.data.segmentation_records``).

Run ``python -m recordio_tools --help``. The record format itself is MXNet's (``mx.recordio``); this package
adds listing, robust multi-process packing with a skip report, and integrity checks.
"""
__all__ = ["listing", "images", "packing", "detection", "instance_masks", "segmentation", "checking", "atomic",
           "reader", "report"]
