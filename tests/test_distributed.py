"""resnest_gluon.distributed under ``horovodrun --gloo -np 2``: the collectives training relies on."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

VENV = os.path.dirname(sys.executable)
HOROVODRUN = os.path.join(VENV, "horovodrun")

pytestmark = pytest.mark.skipif(not os.path.exists(HOROVODRUN), reason="needs horovodrun next to the interpreter")

WORKER = textwrap.dedent('''
    import json, sys
    import mxnet as mx
    from mxnet import gluon
    from resnest_gluon.distributed import Distributed

    dist = Distributed()
    mx.random.seed(100 + dist.rank)                     # different weights on each rank
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(4, 3, in_channels=3), gluon.nn.BatchNorm(in_channels=4), gluon.nn.Dense(3, in_units=4))
    net.initialize(mx.init.Normal(1.0))
    params = net.collect_params()
    before = {k: p.data().asnumpy().ravel().tolist() for k, p in params.items()}
    dist.broadcast_parameters(params)
    after = {k: p.data().asnumpy().ravel().tolist() for k, p in params.items()}
    sums = dist.allreduce_sum([1.5, dist.rank], name="check")
    with open(f"{sys.argv[1]}/rank{dist.rank}.json", "w") as f:
        json.dump({"before": before, "after": after, "sums": sums, "world": dist.world}, f)
''')


def test_broadcast_parameters_gives_every_rank_rank0s_weights_and_allreduce_sum_adds(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.run([HOROVODRUN, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, str(script),
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["before"].keys() == r1["before"].keys()
    assert any(r0["before"][k] != r1["before"][k] for k in r0["before"]), "ranks must start different"
    for k in r0["before"]:
        assert r0["after"][k] == r0["before"][k], f"rank 0's {k} changed"
        assert r1["after"][k] == r0["before"][k], f"rank 1's {k} is not rank 0's"
    assert r0["sums"] == r1["sums"] == [3.0, 1.0]
