"""Readies an MXNet Gluon network for timing, the same way for our models and GluonCV's: one inference step per
dtype, and one training step.

Inference goes through the library's fast-inference path, :func:`resnest_gluon.deploy.optimize` (hybridize with
static memory, then oneDNN fusion or a float16 / bfloat16 / int8 conversion); ``latency.py --dtype`` offers exactly
its dtypes. Training is the recipe's step (``_recipe``) on a network hybridized with static memory, as the training
loop runs it.
"""
import mxnet as mx
from mxnet import autograd, gluon

from resnest_gluon.deploy import amx
from resnest_gluon.deploy import SUPPORTED_DEVICES, input_dtype, optimize

from . import _recipe

SUPPORTED_CTX = SUPPORTED_DEVICES  # dtype -> device types (checked before any model is built)
CALIBRATION_BATCHES = 2  # int8: random batches, enough for a speed measurement (the scales do not change speed)


def enable_amx():
    """Lets oneDNN use Intel AMX for bfloat16 / int8 in this process (``resnest_gluon.deploy.amx``); returns whether AMX is
    on. Called at start-up because oneDNN fixes its instruction set at its first primitive: a bfloat16 or int8 case
    timed after float32 ones in the same process would otherwise run without AMX (float32 kernels never use it)."""
    return amx.enable_amx()


def make_step(net, batch_size, input_size, dtype, ctx, seed=0, fuse=True):
    """Initialises ``net`` with random weights (timing only), prepares it for ``dtype``; returns ``step()``.

    ``fuse``: oneDNN subgraph fusion (ours: on, as ``optimize`` does; GluonCV: off, as its users run it).
    ``int8`` is calibrated on random batches: the measurement is of speed, not accuracy.
    ``step`` runs one batch and waits for the output with ``wait_to_read()``, so a timed batch is a finished batch.
    """
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    x = mx.nd.random.uniform(-1, 1, shape=(batch_size, 3, input_size, input_size), ctx=ctx)
    extra = {}
    if dtype == "int8":
        extra["calib_data"] = [mx.nd.random.uniform(-1, 1, shape=x.shape, ctx=ctx)
                               for _ in range(CALIBRATION_BATCHES)]
    net = optimize(net, dtype, ctx, input_shape=x.shape, fuse=fuse, **extra)
    x = x.astype(input_dtype(dtype))

    def step():
        net(x).wait_to_read()

    return step


def make_train_step(net, batch_size, input_size, ctx, seed=0):
    """Initialises ``net`` (random weights), hybridizes it with static memory; returns ``step()``: one recipe
    training step (forward and loss under ``autograd.record``, backward, ``Trainer.step``) on a fixed random batch.

    ``step`` waits for everything it started (``mx.nd.waitall()``: the updated weights included) and returns the
    per-sample losses.
    """
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier(), ctx=ctx)
    x = mx.nd.random.uniform(-1, 1, shape=(batch_size, 3, input_size, input_size), ctx=ctx)
    classes = net(x[:1]).shape[1]  # finishes deferred initialisation (as the training loop does, before hybridize)
    y = mx.nd.random.randint(0, classes, shape=(batch_size,), ctx=ctx).astype("float32")
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), _recipe.OPTIMIZER,
                            {"learning_rate": _recipe.learning_rate(batch_size), "momentum": _recipe.MOMENTUM,
                             "wd": _recipe.WEIGHT_DECAY}, kvstore=None)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def step():
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(batch_size)
        mx.nd.waitall()
        return loss

    return step


def make_case_step(net, mode, batch_size, input_size, dtype, ctx, fuse=True):
    """``make_train_step`` for ``mode == 'train'`` (float32), else ``make_step`` in ``dtype``: one case's step."""
    if mode == "train":
        return make_train_step(net, batch_size, input_size, ctx)
    return make_step(net, batch_size, input_size, dtype, ctx, fuse=fuse)


def context(kind):
    """``mx.cpu()`` or ``mx.gpu(0)``; a GPU request without a visible GPU raises with the reason."""
    if kind == "cpu":
        return mx.cpu()
    if mx.context.num_gpus() == 0:
        raise RuntimeError("--ctx gpu: MXNet sees no GPU (this is a CPU build of mxnet, or no CUDA device is "
                           "visible). Install mxnet-cu112==1.9.1 on a GPU machine, or use --ctx cpu.")
    return mx.gpu(0)
