"""A persistent timing worker for one peer implementation (GluonCV or timm), driven by ``_peers.PeerWorker``.

It runs in its own interpreter because timm needs torch, and gluoncv refuses to import beside torch >= 2. Staying
alive between rounds lets ``latency.py --compare`` and ``compare.py`` alternate ours / gluoncv / timm without paying
startup each time.

Protocol: one JSON object per line on stdin, one reply per line on stdout (library output is sent to stderr).
    {"cmd": "load", "model", "input_size", "batch_size", "dtype", "ctx", "warmup", "mode"} -> {"ok": true, "params": N}
    {"cmd": "measure", "iters", "seconds"} -> {"ok": true, "latencies_ms": [..]}
    {"cmd": "export_onnx", "model", "input_size", "path"} -> {"ok": true, "params": N}   (timm only; the loaded model
        stays loaded)
    {"cmd": "quit"}
``mode`` is "infer" (one forward pass per timed batch; the default) or "train" (one training step of ``_recipe``:
forward, loss, backward, optimizer update; float32 only). Any failure replies {"ok": false, "error": "..."} and the
worker keeps serving.
Usage: python -m benchmarks._peer_worker gluoncv|timm --threads N
"""
import argparse
import gc
import json
import os
import sys
import traceback
import warnings

if __name__ == "__main__" and not __package__:  # run as a file: rerun as python -m benchmarks._peer_worker
    import _launch  # the script's folder is sys.path[0] when Python runs a file

    _launch.run_as_module(__file__)

from . import _recipe  # noqa: E402
from ._peers import DTYPES  # noqa: E402
from ._timing import time_batches, warm_up  # noqa: E402

MODES = ("infer", "train")
OPSET = 17  # the opset timm's ONNX file is written in


class GluonCVBackend:
    """GluonCV's ResNeSt in MXNet as its users run it: hybridized with static memory, the same dtype conversion as
    ours, without our oneDNN subgraph fusion (which GluonCV does not apply)."""

    def __init__(self, threads):
        import gluoncv
        import mxnet

        from . import _mx_prep

        self.versions = {"gluoncv": gluoncv.__version__, "mxnet": mxnet.__version__, "amx": _mx_prep.enable_amx()}

    def load(self, model, input_size, batch_size, dtype, ctx, mode):
        from gluoncv.model_zoo import get_model

        from . import _mx_prep

        net = get_model(model, pretrained=False)
        if mode == "train":
            # GluonCV builds resnest26 and up with DropBlock 0.1; ours and timm have none by default: time the same
            # network everywhere (a DropBlock at 0 is left out of the graph when it is traced)
            from functools import partial

            from gluoncv.nn.dropblock import set_drop_prob

            net.apply(partial(set_drop_prob, 0.0))
        step = _mx_prep.make_case_step(net, mode, batch_size, input_size, dtype, _mx_prep.context(ctx), fuse=False)
        params = sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")
        return step, int(params)


class TimmBackend:
    """timm's ResNeSt in PyTorch with the same thread count as ours: inference in eval mode under
    ``torch.inference_mode()``; training in train mode with ``torch.optim.SGD(nesterov=True)``."""

    def __init__(self, threads):
        import timm
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.versions = {"timm": timm.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads()}

    def load(self, model, input_size, batch_size, dtype, ctx, mode):
        import timm

        torch = self.torch
        if ctx == "gpu" and not torch.cuda.is_available():
            raise RuntimeError("--ctx gpu: torch sees no CUDA device")
        device = torch.device("cuda:0" if ctx == "gpu" else "cpu")
        torch.manual_seed(0)
        net = timm.create_model(model, pretrained=False).to(device)
        params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        x = torch.empty(batch_size, 3, input_size, input_size, device=device).uniform_(-1, 1)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        if mode == "train":
            return self._train_step(net.train(), x, sync), int(params)
        net.eval()
        if dtype == "float16":
            net, x = net.half(), x.half()
        # bfloat16 mirrors MXNet AMP (low precision where safe, float32 elsewhere): CPU autocast
        autocast = dtype == "bfloat16"

        def step():
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                net(x)
            sync()

        return step, int(params)

    def export_onnx(self, model, input_size, path):
        """timm's own ONNX export of ``model`` (random weights), as its ``onnx_export.py`` script writes one:
        ``timm.utils.onnx.onnx_export`` with ``exportable=True`` layers, eval mode, the TorchScript-based
        ``torch.onnx`` exporter (constant folding, weights as constants, not graph inputs), opset 17, a dynamic
        batch axis, the checker run; input ``data`` and output ``logits`` like ours."""
        import timm
        from timm.utils.onnx import onnx_export

        torch = self.torch
        torch.manual_seed(0)
        net = timm.create_model(model, pretrained=False, exportable=True)
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice: the worker log is enough
            warnings.simplefilter("ignore")
            onnx_export(net, path, batch_size=1, input_size=(3, input_size, input_size), opset=OPSET, check=True,
                        input_names=["data"], output_names=["logits"])
        return int(sum(p.numel() for p in net.parameters()))

    def _train_step(self, net, x, sync):
        torch = self.torch
        batch_size = x.shape[0]
        y = torch.randint(0, net.num_classes, (batch_size,), device=x.device)
        optimizer = torch.optim.SGD(net.parameters(), lr=_recipe.learning_rate(batch_size), momentum=_recipe.MOMENTUM,
                                    nesterov=True, weight_decay=_recipe.WEIGHT_DECAY)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            optimizer.step()
            sync()

        return step


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
                if cmd["dtype"] not in DTYPES:
                    raise ValueError(f"peers are timed in {', '.join(DTYPES)}, not {cmd['dtype']}")
                mode = cmd.get("mode", "infer")
                if mode not in MODES:
                    raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
                if mode == "train" and cmd["dtype"] != "float32":
                    raise ValueError(f"the training step is timed in float32 only, not {cmd['dtype']}")
                step, params = backend.load(cmd["model"], cmd["input_size"], cmd["batch_size"], cmd["dtype"],
                                            cmd["ctx"], mode)
                warm_up(step, cmd["warmup"])
                reply = {"ok": True, "params": params}
            elif cmd["cmd"] == "export_onnx":
                if not hasattr(backend, "export_onnx"):
                    raise ValueError(f"{type(backend).__name__} does not export ONNX files")
                reply = {"ok": True, "params": backend.export_onnx(cmd["model"], cmd["input_size"], cmd["path"])}
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
