"""DataLoader workers forked under training's preemption handler end cleanly: no hang when a loader goes away."""
import os
import subprocess
import sys
import textwrap

import recgen

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a fresh interpreter: signal handlers live in the main thread, and a hang must fail by timeout, not block.
SCRIPT = textwrap.dedent("""
    import multiprocessing, sys
    from resnest_gluon.data import RecordTrainLoader, ValRecordIter
    from resnest_gluon.training.preemption import StopSignals
    from resnest_gluon.zoo import DataConfig

    rec = sys.argv[1]
    with StopSignals():  # as in training: the workers inherit the handler that ignores a first SIGTERM
        for round in range(12):  # validation every epoch: a pool per validation, 4 workers for a few images
            val = ValRecordIter(rec, DataConfig(32, 1.0), batch_size=4, num_workers=4)
            assert sum(len(label) for _, label in val) == 10
            val.close()
            val.close()  # twice is harmless
            assert not multiprocessing.active_children(), multiprocessing.active_children()
        train = RecordTrainLoader(rec, batch_size=2, input_size=32, num_workers=3)
        next(iter(train))  # mid-epoch: batches still queued
        train.close()
        assert not multiprocessing.active_children()
        del train  # __del__ after close: nothing left to terminate
        val = ValRecordIter(rec, DataConfig(32, 1.0), batch_size=4, num_workers=4)
        list(val)
        del val  # collected without close(): __del__ closes too
        assert not multiprocessing.active_children()
    print("ok")
""")


def test_loaders_end_their_workers_without_sigterm(tmp_path):
    rec, _, _ = recgen.make_rec(str(tmp_path / "d"), 10, seed=3)
    done = subprocess.run([sys.executable, "-c", SCRIPT, rec], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
