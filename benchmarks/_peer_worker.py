"""A persistent timing worker for one peer implementation (GluonCV or timm), driven by ``_peers.PeerWorker``.

It runs in its own interpreter because timm needs torch, and gluoncv refuses to import beside torch >= 2. Staying
alive between rounds lets ``latency.py --compare`` alternate ours / gluoncv / timm without paying startup each time.

Protocol: one JSON object per line on stdin, one reply per line on stdout (library output is sent to stderr).
    {"cmd": "load", "model", "input_size", "batch_size", "dtype", "ctx", "warmup"} -> {"ok": true, "params": N}
    {"cmd": "measure", "iters", "seconds"}                                       -> {"ok": true, "latencies_ms": [..]}
    {"cmd": "quit"}
Any failure replies {"ok": false, "error": "..."} and the worker keeps serving.
Usage: python _peer_worker.py gluoncv|timm --threads N
"""
import argparse
import gc
import json
import os
import sys
import traceback

from _timing import time_batches, warm_up


class GluonCVBackend:
    """GluonCV's ResNeSt in MXNet as its users run it: hybridized with static memory, the same dtype conversion as
    ours, without our oneDNN subgraph fusion (which GluonCV does not apply)."""

    def __init__(self, threads):
        import gluoncv
        import mxnet

        self.versions = {"gluoncv": gluoncv.__version__, "mxnet": mxnet.__version__}

    def load(self, model, input_size, batch_size, dtype, ctx):
        from gluoncv.model_zoo import get_model

        import _mx_prep

        net = get_model(model, pretrained=False)
        step = _mx_prep.make_step(net, batch_size, input_size, dtype, _mx_prep.context(ctx), fuse=False)
        params = sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")
        return step, int(params)


class TimmBackend:
    """timm's ResNeSt in PyTorch: eval mode, ``torch.inference_mode()``, the same thread count as ours."""

    def __init__(self, threads):
        import timm
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.versions = {"timm": timm.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}

    def load(self, model, input_size, batch_size, dtype, ctx):
        import timm

        torch = self.torch
        if ctx == "gpu" and not torch.cuda.is_available():
            raise RuntimeError("--ctx gpu: torch sees no CUDA device")
        device = torch.device("cuda:0" if ctx == "gpu" else "cpu")
        torch.manual_seed(0)
        net = timm.create_model(model, pretrained=False).eval().to(device)
        params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        x = torch.empty(batch_size, 3, input_size, input_size, device=device).uniform_(-1, 1)
        if dtype == "float16":
            net, x = net.half(), x.half()
        # bfloat16 mirrors MXNet AMP (low precision where safe, float32 elsewhere): CPU autocast
        autocast = dtype == "bfloat16"
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def step():
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                net(x)
            sync()

        return step, int(params)


BACKENDS = {"gluoncv": GluonCVBackend, "timm": TimmBackend}


def serve(backend, out):
    step = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            if cmd["cmd"] == "quit":
                return
            if cmd["cmd"] == "load":
                step = None
                gc.collect()
                step, params = backend.load(cmd["model"], cmd["input_size"], cmd["batch_size"], cmd["dtype"],
                                            cmd["ctx"])
                warm_up(step, cmd["warmup"])
                reply = {"ok": True, "params": params}
            elif cmd["cmd"] == "measure":
                if step is None:
                    raise RuntimeError("measure before load")
                reply = {"ok": True, "latencies_ms": time_batches(step, cmd.get("iters"), cmd.get("seconds"))}
            else:
                raise ValueError(f"unknown command {cmd['cmd']!r}")
        except Exception as err:  # reported to the parent, which decides; the worker stays usable
            traceback.print_exc(file=sys.stderr)
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", choices=sorted(BACKENDS))
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    out = os.fdopen(os.dup(1), "w")  # the protocol channel
    os.dup2(2, 1)                    # anything else printed (Python or C) goes to stderr
    sys.stdout = sys.stderr
    try:
        backend = BACKENDS[args.backend](args.threads)
        ready = {"ok": True, "ready": True, "versions": backend.versions}
    except Exception as err:
        traceback.print_exc(file=sys.stderr)
        ready = {"ok": False, "error": f"cannot start the {args.backend} worker with {sys.executable}: "
                                       f"{type(err).__name__}: {err}"}
    out.write(json.dumps(ready) + "\n")
    out.flush()
    if ready["ok"]:
        serve(backend, out)


if __name__ == "__main__":
    main()
