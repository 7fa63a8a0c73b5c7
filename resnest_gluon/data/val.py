"""Evaluation input: every image of a .rec exactly once, through the one evaluation transform.

Backends of :class:`ValRecordIter`:

* ``'gluon'`` (default): :class:`~.transforms.EvalTransform` in DataLoader worker processes (with an .idx) or
  in a thread pool over a sequential ``MXRecordIO`` read (without one). Implements both protocol branches,
  and skips undecodable records, listing them in ``.corrupt`` (and warning) instead of failing the run.
* ``'recorditer'``: ``mx.io.ImageRecordIter(resize=ceil(S / crop_pct), data_shape=S)``, which reproduces the
  < 320 px protocol to float rounding (same OpenCV resize, floored long side and centre offsets). It has no
  centred-square variant, so it refuses input sizes >= 320, and it kills the process on an undecodable
  record (SIGFPE in MXNet 1.9.1): use it on .rec files you know are clean.

Sharding (``rank``/``world``) puts each image in exactly one shard; shards may differ by a batch, which is fine
for evaluation (sum the correct counts and totals across ranks at the end, not per step).
"""
import warnings
from concurrent.futures import ThreadPoolExecutor

import mxnet as mx
import numpy as np

from .records import CorruptRecordError, RecordImageDataset, decode_record, default_idx_path, iter_records
from .transforms import LARGE_SIZE, EvalTransform, eval_short_side, interp_code, load_image
from .workers import close_loader

__all__ = ["ValRecordIter", "preprocess_image"]


def preprocess_image(source, data_config):
    """A ``(1, 3, S, S)`` float32 NDArray ready for ``net(x)``, from a file path, PIL image or RGB array."""
    return EvalTransform(data_config)(load_image(source)).expand_dims(0)


class _EvalRecords(RecordImageDataset):
    """``(chw, label, index, ok)``; an undecodable record gives ``ok=False`` and the error text as label."""

    def __init__(self, rec_path, idx_path, transform):
        super().__init__(rec_path, idx_path)
        self.transform = transform

    def __getitem__(self, i):
        try:
            img, label = super().__getitem__(i)
        except CorruptRecordError as err:
            return None, str(err), i, False
        return self.transform.numpy(img), label, i, True


def _batchify(items):
    """Keeps the decodable items as stacked arrays; passes the failures on as ``(index, message)``."""
    good = [it for it in items if it[3]]
    data = np.stack([it[0] for it in good]) if good else None
    labels = np.array([it[1] for it in good], np.float32)
    return data, labels, [(it[2], it[1]) for it in items if not it[3]]


class ValRecordIter:
    """``for data, label in ValRecordIter(rec, net.data_config): ...`` -- batches of ``batch_size`` (the last one
    partial), each image of this rank's shard exactly once per loop.

    After a loop: ``num_images`` (images yielded) and ``corrupt`` (``[(record index, message)]``, gluon backend).
    ``idx_path=None`` uses the .idx next to the .rec when there is one, else reads sequentially.
    """

    def __init__(self, rec_path, data_config, idx_path=None, batch_size=50, num_workers=4, rank=0, world=1,
                 backend="gluon", dtype="float32"):
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
        if backend not in ("gluon", "recorditer"):
            raise ValueError(f"backend must be 'gluon' or 'recorditer', got {backend!r}")
        self.rec_path, self.config, self.batch_size = rec_path, data_config, batch_size
        self.idx_path = idx_path or default_idx_path(rec_path)
        self.num_workers, self.rank, self.world, self.backend, self.dtype = num_workers, rank, world, backend, dtype
        self.transform = EvalTransform(data_config)
        self.num_images, self.corrupt = 0, []
        if backend == "recorditer" and data_config.input_size >= LARGE_SIZE:
            raise ValueError(f"backend='recorditer' implements only the < {LARGE_SIZE} px protocol (resize + "
                             f"centre crop); input_size={data_config.input_size} needs backend='gluon'")
        self._loader = None
        if backend == "gluon" and self.idx_path:
            dataset = _EvalRecords(rec_path, self.idx_path, self.transform)
            shard = list(range(rank, len(dataset), world))
            self._loader = mx.gluon.data.DataLoader(dataset, batch_size=batch_size, sampler=shard,
                                                    last_batch="keep", num_workers=num_workers,
                                                    batchify_fn=_batchify)

    def close(self):
        """Ends the DataLoader's worker processes (also done when the object is collected)."""
        if self._loader is not None:
            close_loader(self._loader)

    def __del__(self):
        if getattr(self, "_loader", None) is not None:
            self.close()

    def __iter__(self):
        self.num_images, self.corrupt = 0, []
        batches = {"recorditer": self._recorditer_batches, "gluon": self._gluon_batches}[self.backend]
        for data, labels, failed in batches():
            for index, message in failed:
                self.corrupt.append((index, message))
                warnings.warn(f"skipped undecodable record: {message}", stacklevel=2)
            if data is None or len(data) == 0:
                continue
            self.num_images += len(labels)
            yield mx.nd.array(data, dtype=self.dtype), mx.nd.array(labels)

    def _gluon_batches(self):
        if self._loader is not None:
            yield from self._loader
            return
        yield from self._sequential_batches()

    def _sequential_batches(self):
        """No .idx: read records in order, keep every ``world``-th from ``rank``, decode in threads (OpenCV
        releases the GIL)."""

        def work(item):
            pos, payload = item
            try:
                img, label = decode_record(payload, f"{self.rec_path} record #{pos}")
            except CorruptRecordError as err:
                return None, str(err), pos, False
            return self.transform.numpy(img), label, pos, True

        with ThreadPoolExecutor(max(1, self.num_workers)) as pool:
            chunk = []
            for pos, payload in iter_records(self.rec_path):
                if pos % self.world == self.rank:
                    chunk.append((pos, payload))
                if len(chunk) == self.batch_size:
                    yield _batchify(list(pool.map(work, chunk)))
                    chunk = []
            if chunk:
                yield _batchify(list(pool.map(work, chunk)))

    def _recorditer_batches(self):
        cfg = self.config
        mean, std = np.asarray(cfg.mean) * 255, np.asarray(cfg.std) * 255
        args = dict(path_imgrec=self.rec_path, batch_size=self.batch_size,
                    data_shape=(3, cfg.input_size, cfg.input_size), resize=eval_short_side(cfg.input_size,
                                                                                            cfg.crop_pct),
                    inter_method=interp_code(cfg.interpolation), preprocess_threads=max(1, self.num_workers),
                    num_parts=self.world, part_index=self.rank, round_batch=True, shuffle=False,
                    mean_r=mean[0], mean_g=mean[1], mean_b=mean[2], std_r=std[0], std_g=std[1], std_b=std[2])
        if self.idx_path:
            args["path_imgidx"] = self.idx_path
        it = mx.io.ImageRecordIter(**args)
        for batch in it:  # round_batch pads the last batch with wrapped-around images: drop them
            n = self.batch_size - batch.pad
            yield batch.data[0][:n].asnumpy(), batch.label[0][:n].asnumpy(), []
