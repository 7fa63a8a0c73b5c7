"""Build and verify MXNet RecordIO image datasets (``.lst`` -> ``.rec``/``.idx``) from class-per-folder trees,
and detection datasets (Pascal VOC, COCO) in im2rec's detection layout.

Run ``python -m recordio_tools --help``. The record format itself is MXNet's (``mx.recordio``); this package
adds listing, robust multi-process packing with a skip report, and integrity checks.
"""
__all__ = ["listing", "images", "packing", "detection", "checking", "atomic", "reader", "report"]
