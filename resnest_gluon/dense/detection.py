"""Faster R-CNN and Mask R-CNN with FPN on a ResNeSt backbone: GluonCV's detectors, FPN, RPN and heads on our network.

Everything but the backbone is GluonCV's own (``FasterRCNN``, ``MaskRCNN``, ``FPNFeatureExpander``, its RPN, RoIAlign,
mask head, losses and target generators). Both share :func:`fpn_rcnn_parts`: P2-P6 (strides 4-64), 256-channel FPN
without biases, a box head of 4 x (3x3 conv 256 + norm + ReLU) and Dense(1024), SyncBatchNorm throughout.

- :func:`faster_rcnn_fpn` is GluonCV's ``faster_rcnn_fpn_syncbn_resnest*_coco``: RoIAlign 7x7 into the box head.
- :func:`mask_rcnn_fpn` is GluonCV's ``custom_mask_rcnn_fpn`` (what its ``train_mask_rcnn.py custom-model`` trains on
  ResNeSt): RoIAlign 14x14, average-pooled to 7x7 for the box head, whole for the mask head.

MXNet's CPU ``ROIAlign`` (1.9.1 at least) leaves the output of an RoI whose batch index is -1 unwritten (its
documentation says zeros): GluonCV's FPN pooling masks each level's RoIs that way and sums the levels, so on CPU its
detections read whatever that memory held (a repeated call gave other scores, once 1e37). Our detectors pool with
those rows zeroed (:func:`zero_masked_roi_align`), GluonCV's own computation otherwise.

gluoncv is imported when a model is built. Loading our operator library regenerates MXNet's ``mx.sym`` operator
functions, and GluonCV's FPN compares its norm layer to the one it imported by identity: we hand it that very one
(``gluoncv.nn.feature.SyncBatchNorm``), so the order in which gluoncv and the operator were loaded does not matter.
"""
import types

import mxnet as mx
from mxnet.gluon import nn

from ..registry import get_model
from .backbone import build_backbone

__all__ = ["faster_rcnn_fpn", "fpn_rcnn_parts", "mask_rcnn_fpn", "plain_batchnorm", "zero_masked_roi_align"]

BACKBONE_PREFIX = "resnest_"  # the traced backbone's parameter names start with it: fixed, not a per-process counter

# GluonCV's FasterRCNN settings of faster_rcnn_fpn_syncbn_resnest*_coco, which are also the defaults of its
# train_mask_rcnn.py custom-model (but short, there 800: training scales, GluonCV evaluates at 800 either way)
FPN_RCNN_SETTINGS = dict(
    short=(640, 800), max_size=1333, min_stage=2, max_stage=6, train_patterns="(?!.*moving)", nms_thresh=0.5,
    nms_topk=-1, post_nms=-1, roi_mode="align", roi_size=(7, 7), strides=(4, 8, 16, 32, 64), clip=4.14,
    rpn_channel=256, base_size=16, scales=(2, 4, 8, 16, 32), ratios=(0.5, 1, 2), alloc_size=(384, 384),
    rpn_nms_thresh=0.7, rpn_train_pre_nms=12000, rpn_train_post_nms=2000, rpn_test_pre_nms=6000,
    rpn_test_post_nms=1000, rpn_min_size=1, num_sample=512, pos_iou_thresh=0.5, pos_ratio=0.25, max_num_gt=100)

# what train_mask_rcnn.py custom-model adds for MaskRCNN (its defaults: --roi-size 14,14, --target-roi-scale 2,
# --num-mask-head-convs 4; MaskRCNN's mask_channels=256 and rcnn_max_dets=1000, as all its FPN Mask R-CNNs)
MASK_RCNN_SETTINGS = dict(FPN_RCNN_SETTINGS, roi_size=(14, 14), mask_channels=256, rcnn_max_dets=1000,
                          target_roi_scale=2, num_fcn_convs=4)


def stage_output_names(backbone, **kwargs):
    """Internal names of the outputs of stages 1-4 in the traced backbone (what GluonCV's FPN taps)."""
    probe = get_model(backbone, features_only=True, out_indices=(1, 2, 3, 4), **kwargs)
    return [s.name[len(probe.prefix):] for s in probe(mx.sym.var("data"))]


BOX_HEADS = ("4conv1fc", "2fc")
NORMS = ("syncbn", "bn", "frozen_bn")


def fpn_rcnn_parts(backbone, pretrained_base=False, num_devices=0, ctx=mx.cpu(), root=None, pool_rois=False,
                   box_head="4conv1fc", norm="syncbn", box_units=1024):
    """What GluonCV's FPN R-CNNs share, on ``backbone`` (any family member): ``(features, box_features, rename)``.

    ``features``: our backbone traced into GluonCV's ``FPNFeatureExpander`` (P2-P6, 256 channels, no biases);
    ``box_features``: ``box_head`` ``"4conv1fc"`` (GluonCV's SyncBN ResNeSt detectors: 4 x (3x3 conv 256 + norm +
    ReLU), Dense(1024) + ReLU) or ``"2fc"`` (its FPN detectors without SyncBN, e.g. ``faster_rcnn_fpn_resnet50_v1b``:
    2 x (Dense(1024) + ReLU), ~1/8 of the work per RoI), after a 3x3/2 average pooling when ``pool_rois`` (GluonCV's
    ``custom_rcnn_fpn``: 14x14 RoIs reduced to 7x7); ``box_units``: the width of those Dense layers (GluonCV's
    1024; fewer for small data on small machines: the first Dense holds most of a light detector's weights);
    ``rename``: GluonCV's parameter names to ours. Normalisation
    (``norm``) is ``"syncbn"``: SyncBatchNorm over ``num_devices`` devices (0: all), as GluonCV's ResNeSt detectors;
    ``"bn"``: BatchNorm, what SyncBatchNorm computes on one device, but with MXNet's oneDNN kernels (a training step
    on CPU ~1/4 faster), for one device per process (Horovod); ``"frozen_bn"``: BatchNorm with fixed statistics
    (``use_global_stats``), for fine-tuning a pretrained backbone on small batches. Parameter names do not depend
    on ``norm``, so a file trained with one loads into the others."""
    if box_head not in BOX_HEADS:
        raise ValueError(f"box_head must be one of {BOX_HEADS}, got {box_head!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    from gluoncv.nn import feature
    from mxnet.gluon.contrib.nn import SyncBatchNorm

    norm_kwargs = {"num_devices": num_devices} if num_devices >= 1 else {}
    arch = dict(norm_layer=SyncBatchNorm, norm_kwargs=norm_kwargs)

    base = build_backbone(backbone, pretrained_base, ctx, root, out_indices=(4,), prefix=BACKBONE_PREFIX, **arch)
    features = feature.FPNFeatureExpander(
        network=base, outputs=stage_output_names(backbone, **arch), num_filters=[256] * 4, use_1x1=True,
        use_upsample=True, use_elewadd=True, use_p6=True, no_bias=True, pretrained=False,
        norm_layer=feature.SyncBatchNorm, norm_kwargs={"ndev": num_devices} if num_devices >= 1 else {})
    if norm != "syncbn":
        plain_batchnorm(features, frozen=norm == "frozen_bn")

    def norm_block():
        if norm == "syncbn":
            return SyncBatchNorm(**norm_kwargs)
        return nn.BatchNorm(use_global_stats=norm == "frozen_bn")

    box_features = nn.HybridSequential()
    if pool_rois:
        box_features.add(nn.AvgPool2D(pool_size=(3, 3), strides=2, padding=1))
    for _ in range(4 if box_head == "4conv1fc" else 0):
        box_features.add(nn.Conv2D(256, 3, padding=1, use_bias=False), norm_block(),
                         nn.Activation("relu"))
    for _ in range(1 if box_head == "4conv1fc" else 2):
        box_features.add(nn.Dense(box_units, weight_initializer=mx.init.Normal(0.01)), nn.Activation("relu"))
    return features, box_features, _gluoncv_names(backbone, arch)


def faster_rcnn_fpn(backbone, classes, pretrained_base=False, num_devices=0, ctx=mx.cpu(), root=None,
                    box_head="4conv1fc", norm="syncbn", box_units=1024, **kwargs):
    """Faster R-CNN FPN for ``classes`` (a list of names) on ``backbone`` (any family member), SyncBatchNorm over
    ``num_devices`` devices (0: all; on one device it is BatchNorm) in the backbone, FPN and box head, as GluonCV's
    ResNeSt detectors; ``box_head="2fc"`` for the lighter head, ``norm="bn"`` / ``"frozen_bn"`` for BatchNorm,
    ``box_units`` for narrower Dense layers in it (see :func:`fpn_rcnn_parts`). ``kwargs`` replace
    GluonCV's settings (``short``, ``max_size``, ``nms_thresh``, ...)."""
    from gluoncv.model_zoo.rcnn.faster_rcnn.faster_rcnn import FasterRCNN

    features, box_features, rename = fpn_rcnn_parts(backbone, pretrained_base, num_devices, ctx, root,
                                                    box_head=box_head, norm=norm, box_units=box_units)
    net = FasterRCNN(features=features, top_features=None, classes=classes, box_features=box_features,
                     **dict(FPN_RCNN_SETTINGS, **kwargs))
    net.gluoncv_name = rename
    return zero_masked_roi_align(net)


def mask_rcnn_fpn(backbone, classes, pretrained_base=False, num_devices=0, ctx=mx.cpu(), root=None, norm="syncbn",
                  box_head="4conv1fc", box_units=1024, **kwargs):
    """Mask R-CNN FPN for ``classes`` (a list of names) on ``backbone`` (any family member): GluonCV's ``MaskRCNN``
    with the structure of its ``custom_mask_rcnn_fpn(classes, base_network_name='resnest50', norm_layer=
    SyncBatchNorm, sym_norm_layer=mx.sym.contrib.SyncBatchNorm)``, whose files load through
    :func:`~resnest_gluon.dense.load_gluoncv_params`; SyncBatchNorm over ``num_devices`` devices (0: all).

    Settings (``MASK_RCNN_SETTINGS``; ``kwargs`` replace them) are the defaults of GluonCV's ``train_mask_rcnn.py
    custom-model``, the script that builds that model: RoIAlign 14x14 (pooled to 7x7 for the box head), 28x28 masks
    (``target_roi_scale=2``) from ``num_fcn_convs=4`` 3x3 convs of ``mask_channels=256`` and a 2x2 deconvolution,
    ``rpn_channel=256``, ``clip=4.14``, 1000 RPN proposals and ``rcnn_max_dets=1000``, NMS 0.5 keeping all; but
    ``short=(640, 800)`` (the script: 800; a training scale only, both evaluate at 800) and ``max_size=1333`` as
    GluonCV's FPN SyncBN models (``mask_rcnn_fpn_syncbn_*``, which differ in 2 mask convs, ``rpn_channel=1024`` and
    ``clip=4.42``). As in ``custom_mask_rcnn_fpn`` the mask head has no normalisation (``norm_layer=SyncBatchNorm,
    norm_kwargs=...`` add it, as ``mask_rcnn_fpn_syncbn_*``). The script itself passes no ``sym_norm_layer``: a file
    it trained has an FPN without normalisation and does not load here.

    Inference returns ``ids, scores, boxes, masks``: the ``rcnn_max_dets`` best detections (rows of -1 after the
    valid ones) and each one's 28x28 mask probabilities, to be pasted into its box. ``box_head`` / ``box_units``
    as :func:`faster_rcnn_fpn` (``"2fc"`` and narrower Dense layers for small data on small machines; the mask
    head is GluonCV's either way: ``num_fcn_convs`` and ``mask_channels`` set it)."""
    from gluoncv.model_zoo.rcnn.mask_rcnn.mask_rcnn import MaskRCNN

    features, box_features, rename = fpn_rcnn_parts(backbone, pretrained_base, num_devices, ctx, root,
                                                    pool_rois=True, box_head=box_head, norm=norm,
                                                    box_units=box_units)
    net = MaskRCNN(features=features, top_features=None, classes=classes, box_features=box_features,
                   **dict(MASK_RCNN_SETTINGS, **kwargs))
    net.gluoncv_name = rename
    return zero_masked_roi_align(net)


def plain_batchnorm(block, frozen=False):
    """Turns every SyncBatchNorm of the traced ``block`` (a SymbolBlock: GluonCV's ``FPNFeatureExpander`` with our
    backbone) into BatchNorm, in place: same inputs and parameter names, ``use_global_stats`` when ``frozen``.
    GluonCV's FPN names its layers only when they are SyncBatchNorm, so it is built that way and rewritten here."""
    import json

    inputs, outputs = block._cached_graph
    graph = json.loads(outputs.tojson())
    for node in graph["nodes"]:
        if node["op"] == "_contrib_SyncBatchNorm":
            attrs = {k: v for k, v in node.get("attrs", {}).items() if k not in ("ndev", "key")}
            if frozen:
                attrs["use_global_stats"] = "True"
            node["op"], node["attrs"] = "BatchNorm", attrs
    block._cached_graph = inputs, mx.sym.load_json(json.dumps(graph))
    return block


def zero_masked_roi_align(net):
    """``net`` (a GluonCV FPN R-CNN), its ``_pyramid_roi_feats`` (GluonCV's, unchanged) run with a ``contrib.ROIAlign``
    that gives zeros for RoIs of batch index -1, as MXNet documents and its GPU kernel does; MXNet's CPU kernel writes
    one number and leaves the rest of such an RoI's output as the memory was. Imperative and hybridized alike."""
    pool = net._pyramid_roi_feats
    net._pyramid_roi_feats = lambda F, *args, **kwargs: pool(_with_zeroed_roi_align(F), *args, **kwargs)
    return net


_ZEROED = {}


def _with_zeroed_roi_align(F):
    """``F`` (``mx.nd`` or ``mx.sym``) with ``contrib.ROIAlign`` zeroing the output of RoIs whose batch index is < 0
    (selected by ``where``, not multiplied: the unwritten memory may hold inf or NaN)."""
    if F not in _ZEROED:
        def roi_align(data, rois, *args, **kwargs):
            out = F.contrib.ROIAlign(data, rois, *args, **kwargs)
            valid = F.reshape(F.slice_axis(rois, axis=1, begin=0, end=1), (-1,)) >= 0
            return F.where(valid, out, F.zeros_like(out))

        contrib = types.SimpleNamespace(**dict(vars(F.contrib), ROIAlign=roi_align))
        _ZEROED[F] = types.SimpleNamespace(**dict(vars(F), contrib=contrib))
    return _ZEROED[F]


def _gluoncv_names(backbone, arch):
    """Maps GluonCV's parameter names of the same detector to ours: its traced backbone's full names
    (``resnest_conv0_weight``) to ours (``resnest_conv1_conv0_weight``) through the structural names both models
    share; everything else (FPN, RPN, heads) is named alike."""
    cache = {}

    def rename(name):
        if not name.startswith("features.") or "P" == name[len("features."):][:1]:
            return name
        if not cache:
            from gluoncv.model_zoo import get_model as gluoncv_model

            theirs = gluoncv_model(backbone, pretrained=False, **arch)._collect_params_with_prefix()
            ours = get_model(backbone, features_only=True, out_indices=(4,), prefix=BACKBONE_PREFIX,
                             **arch)._collect_params_with_prefix()
            cache.update({p.name: "features." + ours[k].name for k, p in theirs.items() if k in ours})
        return cache.get(name[len("features."):], name)

    return rename
