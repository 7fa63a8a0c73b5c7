"""Faster R-CNN with FPN on a ResNeSt backbone: GluonCV's detector, FPN, RPN and box head on our network.

Everything but the backbone is GluonCV's own (``FasterRCNN``, ``FPNFeatureExpander``, its RPN, RoIAlign, losses and
target generators), configured as GluonCV's ``faster_rcnn_fpn_syncbn_resnest*_coco``: P2-P6 (strides 4-64), 256-channel
FPN, RoIAlign 7x7, a box head of 4 x (3x3 conv 256 + norm + ReLU) and Dense(1024). gluoncv is imported when a model is
built. Import ``resnest_gluon`` before ``gluoncv`` (this package always is): loading our operator library regenerates
MXNet's ``mx.sym`` operator functions, and GluonCV's FPN compares its norm layer to one of them by identity.
"""
import mxnet as mx
from mxnet.gluon import nn

from ..zoo import get_model

__all__ = ["faster_rcnn_fpn"]

BACKBONE_PREFIX = "resnest_"  # the traced backbone's parameter names start with it: fixed, not a per-process counter


def stage_output_names(backbone, **kwargs):
    """Internal names of the outputs of stages 1-4 in the traced backbone (what GluonCV's FPN taps)."""
    probe = get_model(backbone, features_only=True, out_indices=(1, 2, 3, 4), **kwargs)
    return [s.name[len(probe.prefix):] for s in probe(mx.sym.var("data"))]


def faster_rcnn_fpn(backbone, classes, pretrained_base=False, num_devices=0, ctx=mx.cpu(), root=None, **kwargs):
    """Faster R-CNN FPN for ``classes`` (a list of names) on ``backbone`` (any family member), SyncBatchNorm over
    ``num_devices`` devices (0: all; on one device it is BatchNorm) in the backbone, FPN and box head, as GluonCV's
    ResNeSt detectors. ``kwargs`` replace GluonCV's settings (``short``, ``max_size``, ``nms_thresh``, ...)."""
    from gluoncv.model_zoo.rcnn.faster_rcnn.faster_rcnn import FasterRCNN
    from gluoncv.nn.feature import FPNFeatureExpander
    from mxnet.gluon.contrib.nn import SyncBatchNorm

    norm_kwargs = {"num_devices": num_devices} if num_devices >= 1 else {}
    arch = dict(norm_layer=SyncBatchNorm, norm_kwargs=norm_kwargs)
    base = get_model(backbone, pretrained=pretrained_base, ctx=ctx, root=root, features_only=True, out_indices=(4,),
                     prefix=BACKBONE_PREFIX, **arch)
    features = FPNFeatureExpander(
        network=base, outputs=stage_output_names(backbone, **arch), num_filters=[256] * 4, use_1x1=True,
        use_upsample=True, use_elewadd=True, use_p6=True, no_bias=True, pretrained=pretrained_base,
        norm_layer=mx.sym.contrib.SyncBatchNorm, norm_kwargs={"ndev": num_devices} if num_devices >= 1 else {})
    box_features = nn.HybridSequential()
    for _ in range(4):
        box_features.add(nn.Conv2D(256, 3, padding=1, use_bias=False), SyncBatchNorm(**norm_kwargs),
                         nn.Activation("relu"))
    box_features.add(nn.Dense(1024, weight_initializer=mx.init.Normal(0.01)), nn.Activation("relu"))
    settings = dict(
        short=(640, 800), max_size=1333, min_stage=2, max_stage=6, train_patterns="(?!.*moving)", nms_thresh=0.5,
        nms_topk=-1, post_nms=-1, roi_mode="align", roi_size=(7, 7), strides=(4, 8, 16, 32, 64), clip=4.14,
        rpn_channel=256, base_size=16, scales=(2, 4, 8, 16, 32), ratios=(0.5, 1, 2), alloc_size=(384, 384),
        rpn_nms_thresh=0.7, rpn_train_pre_nms=12000, rpn_train_post_nms=2000, rpn_test_pre_nms=6000,
        rpn_test_post_nms=1000, rpn_min_size=1, num_sample=512, pos_iou_thresh=0.5, pos_ratio=0.25, max_num_gt=100)
    settings.update(kwargs)
    net = FasterRCNN(features=features, top_features=None, classes=classes, box_features=box_features, **settings)
    net.gluoncv_name = _gluoncv_names(backbone, arch)
    return net


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
