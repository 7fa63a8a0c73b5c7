"""Stopping a Gluon ``DataLoader``'s worker processes without SIGTERM.

Why: ``DataLoader.__del__`` ends its pool with ``Pool.terminate()``, which takes the task queue's read lock away from
idle workers and relies on SIGTERM killing them. Our workers are forked inside training's preemption handler
(``training/preemption.py``) so that a scheduler's SIGTERM to the process group leaves them alive until the
checkpoint is written; such a worker survives ``terminate()`` too, waits on that lock forever, and the training
process hangs in the join (seen: validation every epoch with ``-j 4``). ``close_loader`` lets the workers finish
their queue and leave (``Pool.close()`` + ``join()``), which needs no signal.
"""
import multiprocessing.pool

__all__ = ["close_loader"]


def close_loader(loader):
    """Ends ``loader``'s worker processes cleanly; afterwards its ``__del__`` has nothing left to terminate.
    Safe to call twice, and on loaders without workers (``num_workers=0``) or with a thread pool."""
    pool = getattr(loader, "_worker_pool", None)
    if pool is None:
        return
    loader._worker_pool = None
    if isinstance(pool, multiprocessing.pool.Pool):
        pool.close()
        pool.join()
