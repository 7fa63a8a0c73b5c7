"""The two training input pipelines, sharded by rank with the same number of steps on every rank.

* :class:`RecordTrainIter` (default, fast): ``mx.io.ImageRecordIter`` does decoding and the whole recipe in C++
  threads. Shards are ``num_parts=world, part_index=rank`` (with an .idx: contiguous blocks of ceil(N / world)
  records, the last block shorter). Every rank stops after ``steps_per_epoch = floor(N / (world * batch_size))``
  batches; a shard that runs out first (the short last block) wraps around to its start. The tail of a longer
  shard beyond ``steps * batch_size`` is not read that epoch (different records each epoch, as the shard is
  reshuffled). Shards are fixed blocks of the file, so pack the .rec in shuffled order (im2rec's default).
  The C++ iterator is rebuilt for every epoch with seeds from ``(seed, epoch)`` (order) and ``(seed, epoch, rank)``
  (augmentation), so epoch E reads the same batches whether or not the process ran the epochs before it (resume).
  MXNet decodes with ``min(num_workers, cores - 1)`` threads, each with its own RNG over a fixed slice of each
  chunk: bit-identical batches need the same effective thread count, which ``num_workers=1`` guarantees anywhere.
* :class:`RecordTrainLoader` (flexible): Gluon ``DataLoader`` worker processes over a
  :class:`~.records.RecordImageDataset`, for what the C++ iterator lacks (AutoAugment, any Python transform).
  A :class:`~.sharding.ShardSampler` gives disjoint, equal-size shards of a fresh global shuffle each epoch.

Both yield ``(data, label)`` NDArray pairs for one epoch per ``for`` loop (``len()`` batches, then the next
loop starts the next epoch; ``reset()`` does that early), and carry ``steps``/``__len__``. ``set_epoch(E, skip=k)``
makes the next loop yield epoch E's batches from batch k on, the same batches as batches k.. of an uninterrupted
epoch E (resuming inside an epoch): the loader skips by index, reading nothing for them; the ImageRecordIter path
decodes and drops the first k batches (its augmentation RNG advances image by image), which costs about k steps'
data time, without their forward and backward passes.
Undecodable records (a damaged or empty image payload) are skipped on both paths, the step count staying the same
on every rank: ``RecordTrainIter(skip_bad=True)`` reads a copy of the .rec without them (ImageRecordIter cannot step
over a record, nor can an .idx leave one out: see :mod:`.bad_records`); the loader replaces each by the next
decodable record in file order and reports its index with the batch (``take_bad()``).
"""
import mxnet as mx
import numpy as np

from ..config import IMAGENET_MEAN, IMAGENET_STD
from .bad_records import records_without_bad, scan_bad_records
from .records import CorruptRecordError, RecordImageDataset, count_records, default_idx_path
from .sharding import ShardSampler, steps_per_epoch
from .transforms import LARGE_SIZE, TrainTransform, interp_code
from .workers import close_loader

__all__ = ["RecordTrainIter", "RecordTrainLoader"]


def _size(data_shape):
    """``224`` or ``(3, 224, 224)`` -> 224 (square inputs only)."""
    if isinstance(data_shape, int):
        return data_shape
    c, h, w = data_shape
    if c != 3 or h != w:
        raise ValueError(f"data_shape must be an int or (3, S, S), got {data_shape}")
    return h


def _check_world(rank, world):
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")


class _EpochIterable:
    """One epoch per ``for`` loop; ``reset()`` ends the current epoch early (a no-op on a fresh one)."""

    steps = 0
    epoch = 0
    skip = 0  # batches the next loop leaves out (see set_epoch)
    _fresh = True

    def __len__(self):
        return self.steps

    def reset(self):
        if not self._fresh:
            self._next_epoch()
            self._fresh = True

    def __iter__(self):
        self.reset()
        self._fresh = False
        return self._batches()


class RecordTrainIter(_EpochIterable):
    """The ResNeSt training recipe on ``mx.io.ImageRecordIter``: random-resized crop (area 0.08-1, aspect
    3/4-4/3), mirror, colour jitter, PCA lighting, mean/std normalisation, in ``num_workers`` C++ threads.

    ``interpolation=None`` is bilinear below 320 px and bicubic from 320 px on. ``dtype`` is the output dtype
    (e.g. 'float16'). ``idx_path`` defaults to the .idx next to the .rec and is required (records are counted
    from it, and it makes the shards exact record counts).

    ``skip_bad=True`` first finds the undecodable records (decoding every image once per file, ``scan_workers``
    processes; cached beside the .rec) and reads a copy of the .rec without them, if there are any (listed in
    ``bad_records``; ``num_records`` counts the records read). With several ranks, let one build the caches first.
    """

    def __init__(self, rec_path, idx_path=None, batch_size=32, data_shape=224, num_workers=4, rank=0, world=1,
                 shuffle=True, seed=0, dtype="float32", jitter=0.4, lighting=0.1, rand_mirror=True,
                 min_random_area=0.08, max_random_area=1.0, min_aspect_ratio=3 / 4, max_aspect_ratio=4 / 3,
                 interpolation=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, prefetch_buffer=4, skip_bad=False,
                 scan_workers=1, **kwargs):
        _check_world(rank, world)
        idx_path = idx_path or default_idx_path(rec_path)
        if idx_path is None:
            raise FileNotFoundError(f"{rec_path}: the training iterator needs its .idx (pass idx_path=)")
        size = _size(data_shape)
        self.source_records = count_records(idx_path)
        self.bad_records = scan_bad_records(rec_path, idx_path, scan_workers) if skip_bad else []
        rec_path, idx_path = records_without_bad(rec_path, idx_path, self.bad_records)
        self.num_records = count_records(idx_path)
        self.steps = steps_per_epoch(self.num_records, batch_size, world, what=rec_path)
        self.batch_size, self.rank, self.world = batch_size, rank, world
        interpolation = interpolation or ("bicubic" if size >= LARGE_SIZE else "bilinear")
        args = dict(path_imgrec=rec_path, path_imgidx=idx_path, batch_size=batch_size, data_shape=(3, size, size),
                    preprocess_threads=num_workers, shuffle=shuffle,
                    num_parts=world, part_index=rank, round_batch=True, dtype=dtype,
                    random_resized_crop=True, min_random_area=min_random_area, max_random_area=max_random_area,
                    min_aspect_ratio=min_aspect_ratio, max_aspect_ratio=max_aspect_ratio,
                    rand_mirror=rand_mirror, brightness=jitter, contrast=jitter, saturation=jitter,
                    pca_noise=lighting, inter_method=interp_code(interpolation), prefetch_buffer=prefetch_buffer,
                    mean_r=mean[0] * 255, mean_g=mean[1] * 255, mean_b=mean[2] * 255,
                    std_r=std[0] * 255, std_g=std[1] * 255, std_b=std[2] * 255)
        args.update(kwargs)
        self.iter_args, self.seed = args, seed
        self.wraps = 0  # how often a short shard wrapped around (diagnostics)
        self._iter = None
        self.set_epoch(0)

    def epoch_seeds(self, epoch):
        """``(shuffle seed, augmentation seed)`` of ``epoch``: a function of (seed, epoch, rank) only."""
        base = (self.seed * 1_000_003 + epoch * 7_919) % 2 ** 31
        return base, (base * 1_000 + self.rank) % 2 ** 31

    def set_epoch(self, epoch, skip=0):
        """Start the next ``for`` loop at ``epoch`` (e.g. when resuming): a fresh iterator with that epoch's seeds;
        the loop then yields from batch ``skip`` on."""
        if not 0 <= skip <= self.steps:
            raise ValueError(f"skip must be in [0, {self.steps}] (batches per epoch), got {skip}")
        self.epoch, self.skip = int(epoch), int(skip)
        seed, seed_aug = self.epoch_seeds(self.epoch)
        self._iter = None  # free the previous iterator's threads and buffers first
        self._iter = mx.io.ImageRecordIter(**{**self.iter_args, "seed": seed, "seed_aug": seed_aug})
        self._fresh = True

    def _next_epoch(self):
        self.set_epoch(self.epoch + 1)

    def _batches(self):
        for b in range(self.steps):
            try:
                batch = self._iter.next()
            except StopIteration:
                self._iter.reset()
                self.wraps += 1
                batch = self._iter.next()
            if b >= self.skip:  # the first `skip` are decoded and dropped: the RNG reaches batch `skip` only so
                yield batch.data[0], batch.label[0]

    def take_bad(self):
        """Bad records met since the last call: none here (they were left out of the copy read)."""
        return []


class _AugmentedRecords(RecordImageDataset):
    """Items keyed by ``(index, sample_seed)``: augmentations draw from their own seeded RNG, so results do not
    depend on which worker process runs them.

    An item is ``(image, label, bad)``: ``bad`` is -1, or the index of an undecodable record replaced by the next
    decodable one in file order (the batch keeps its size; the report travels with the batch, as workers are
    separate processes)."""

    def __init__(self, rec_path, idx_path, transform):
        super().__init__(rec_path, idx_path)
        self.transform = transform

    def __getitem__(self, key):
        index, sample_seed = key
        bad = -1
        for step in range(len(self)):
            try:
                img, label = super().__getitem__((index + step) % len(self))
                break
            except CorruptRecordError:
                bad = index if bad < 0 else bad
        else:
            raise CorruptRecordError(f"{self.rec_path}: no record decodes")
        return self.transform(img, np.random.RandomState(sample_seed)), label, bad

    def problem(self, index):
        """``(key, byte offset, reason)`` of the bad record ``index`` (decoded again, in this process)."""
        key = self.keys[index]
        try:
            super().__getitem__(index)
            reason = "decodes now (a read error?)"
        except CorruptRecordError as err:
            reason = str(err).split(": ", 1)[-1]
        return key, int(self._record.idx[key]), reason


class _SeededSampler:
    def __init__(self, sampler, seed):
        self.sampler, self.seed = sampler, seed

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((i, hash((self.seed, epoch, i)) & 0xFFFFFFFF) for i in self.sampler)


class RecordTrainLoader(_EpochIterable):
    """The training recipe on a Gluon ``DataLoader`` with ``num_workers`` processes (see :class:`TrainTransform`).

    ``autoaugment=True`` runs the ImageNet AutoAugment policy before the crop; ``min_random_area`` is the smallest
    random-resized crop (fraction of the image area, as :class:`RecordTrainIter`'s). ``input_size >= 320`` crops with
    bicubic interpolation. ``transform`` replaces the recipe: ``f(rgb_uint8_hwc, numpy_rng) -> CHW float32``.
    ``last_batch='discard'`` (full batches, ``floor(N / (world * batch_size))`` steps) or ``'keep'``.
    """

    def __init__(self, rec_path, idx_path=None, batch_size=32, input_size=224, num_workers=4, rank=0, world=1,
                 shuffle=True, seed=0, dtype="float32", autoaugment=False, interpolation=None, jitter=0.4,
                 lighting=0.1, mean=IMAGENET_MEAN, std=IMAGENET_STD, last_batch="discard", transform=None,
                 min_random_area=0.08, **loader_kwargs):
        _check_world(rank, world)
        self.transform = transform or TrainTransform(input_size, scale=(min_random_area, 1.0),
                                                     interpolation=interpolation, jitter=jitter,
                                                     lighting=lighting, autoaugment=autoaugment, mean=mean, std=std)
        self.dataset = _AugmentedRecords(rec_path, idx_path, self.transform)
        self.num_records = self.source_records = len(self.dataset)
        self.sampler = ShardSampler(self.num_records, batch_size, rank, world, shuffle, seed, last_batch)
        self.steps = self.sampler.num_batches
        self.batch_size, self.rank, self.world, self.dtype = batch_size, rank, world, dtype
        self.loader = mx.gluon.data.DataLoader(self.dataset, batch_size=batch_size,
                                               sampler=_SeededSampler(self.sampler, seed), last_batch="keep",
                                               num_workers=num_workers, **loader_kwargs)

    def close(self):
        """Ends the DataLoader's worker processes (also done when the object is collected)."""
        close_loader(self.loader)

    def __del__(self):
        if getattr(self, "loader", None) is not None:
            self.close()

    def set_epoch(self, epoch, skip=0):
        """Start the next ``for`` loop at ``epoch`` (e.g. when resuming), from batch ``skip`` on: the sampler leaves
        out those samples, nothing is read or decoded for them (each sample's augmentation depends on its index)."""
        if not 0 <= skip <= self.steps:
            raise ValueError(f"skip must be in [0, {self.steps}] (batches per epoch), got {skip}")
        self.epoch, self.skip = int(epoch), int(skip)
        self.sampler.set_epoch(self.epoch, skip=min(skip * self.batch_size, self.sampler.per_rank))
        self._fresh = True

    def _next_epoch(self):
        self.epoch += 1
        self.sampler.set_epoch(self.epoch)

    def _batches(self):
        self._bad = []
        for data, label, bad in self.loader:
            self._bad.extend(int(i) for i in bad.asnumpy() if i >= 0)
            yield (data if self.dtype in (None, "float32") else data.astype(self.dtype)), label

    def take_bad(self):
        """Indices of the undecodable records replaced in the batches yielded since the last call."""
        bad, self._bad = getattr(self, "_bad", []), []
        return bad
