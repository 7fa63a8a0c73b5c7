"""Our networks as the backbones of GluonCV's dense heads (one builder shared by detection and segmentation)."""
import os

import mxnet as mx

from ..trained import read_info
from ..weights import load_weights
from ..zoo import build_resnest, get_config

__all__ = ["build_backbone"]


def build_backbone(name, pretrained_base=False, ctx=mx.cpu(), root=None, **kwargs):
    """Our network ``name`` as a dense model's backbone (``features_only``; ``kwargs`` as :func:`get_model`'s).

    ``pretrained_base``: False (to be initialised), True (the published ImageNet weights) or the path of a
    classification weights file of this project (a checkpoint or a ``save_trained`` file: its information must name
    the same model; its classifier is left out).
    """
    if isinstance(pretrained_base, (str, os.PathLike)):
        info = read_info(pretrained_base)
        if info is not None and info.model != get_config(name).name:
            raise ValueError(f"{pretrained_base} holds a {info.model}, not the {get_config(name).name} backbone "
                             f"asked for")
        net = build_resnest(get_config(name).name, ctx=ctx, features_only=True, **kwargs)
        return load_weights(net, os.fspath(pretrained_base), ctx=ctx)
    return build_resnest(get_config(name).name, pretrained=bool(pretrained_base), ctx=ctx, root=root,
                         features_only=True, **kwargs)
