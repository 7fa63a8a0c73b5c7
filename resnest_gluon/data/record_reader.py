"""A read-mode ``mx.recordio.MXRecordIO`` that can also tell and seek byte offsets.

``MXIndexedRecordIO.tell`` only works for writers and ``seek`` needs a parsed ``.idx``; the checker needs the
offset of every record while reading sequentially, and to jump to offsets taken from a possibly broken
``.idx``. Both use MXNet's own C API (``MXRecordIOReaderTell`` / ``MXRecordIOReaderSeek``), so the record
framing is still parsed by MXNet.
"""
import ctypes

import mxnet as mx
from mxnet.base import _LIB, check_call


class RecordReader(mx.recordio.MXRecordIO):
    def __init__(self, path):
        self._at_eof = False
        super().__init__(path, "r")

    def read(self):
        buf = super().read()
        self._at_eof = buf is None
        return buf

    def tell(self):
        pos = ctypes.c_size_t()
        check_call(_LIB.MXRecordIOReaderTell(self.handle, ctypes.byref(pos)))
        return pos.value

    def seek(self, offset):
        if self._at_eof:  # dmlc's reader keeps its end-of-stream flag across seeks: reopen
            self.reset()
            self._at_eof = False
        check_call(_LIB.MXRecordIOReaderSeek(self.handle, ctypes.c_size_t(offset)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
