"""Strict image loading: a truncated file is an error, whatever other libraries set PIL to do.

Shared by the record checker (:mod:`.checking`, which training's bad-record scan runs) and the packing tools.
"""
import threading

from PIL import ImageFile

__all__ = ["load_strict"]

_STRICT_LOCK = threading.Lock()


def load_strict(im):
    """``im.load()`` that raises on a truncated file whatever PIL's process-wide ``LOAD_TRUNCATED_IMAGES`` says.

    Other libraries set that flag at import (gluoncv does), after which PIL pads truncated files with grey
    silently; a packer or checker must see the error instead.
    """
    with _STRICT_LOCK:
        old, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = old
