"""Build and verify MXNet RecordIO image datasets (``.lst`` -> ``.rec``/``.idx``) from class-per-folder trees.

Run ``python -m recordio_tools --help``. The record format itself is MXNet's (``mx.recordio``); this package
adds listing, robust multi-process packing with a skip report, and integrity checks.
"""
__all__ = ["listing", "images", "packing", "checking", "atomic", "reader", "report"]
