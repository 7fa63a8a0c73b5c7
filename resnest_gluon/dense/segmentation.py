"""DeepLabV3 on a dilated ResNeSt: GluonCV's ASPP head and auxiliary FCN head on our backbone.

The heads are GluonCV's own classes (``gluoncv.model_zoo.deeplabv3._DeepLabHead``, ``fcn._FCNHead``), imported when
a model is built, never when this package is imported (gluoncv refuses to import beside torch >= 2). Two things
differ from GluonCV's ``DeepLabV3``, both without changing a number at GluonCV's own input size:
- any input size: GluonCV fixes the output size (and the ASPP image pooling's) when the model is built, so a
  hybridized model only takes its crop size; here both follow the input;
- the backbone is one child, ``backbone`` (our ``ResNeSt`` with ``output_stride=8``), so its weights are ours by
  name; GluonCV's files load through :func:`resnest_gluon.dense.load_gluoncv_params`.
"""
import mxnet as mx
from mxnet.gluon import nn

from .backbone import build_backbone


__all__ = ["DeepLabV3"]

# ASPP's atrous rates per output stride: GluonCV's at 8; at 16 half of them, as in DeepLabV3's paper (Chen et al. 2017)
ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
STAGE1_CHANNELS = 256  # every ResNeSt's stage 1 (64 planes x 4), the decoder's low-level input
_BACKBONE_CHILDREN = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def _size_free_image_pooling(pooling):
    """Makes GluonCV's ASPP image pooling follow its input's size. It resizes a 1x1 map bilinearly to a size fixed at
    construction; a bilinear resize of one pixel is a broadcast, so broadcasting to the input's size gives the same
    numbers at that size and works at any other."""
    def hybrid_forward(F, x):
        return F.broadcast_like(pooling.gap(x), x, lhs_axes=(2, 3), rhs_axes=(2, 3))

    pooling.hybrid_forward = hybrid_forward
    return pooling


def _size_free_decoder(head):
    """Makes GluonCV's DeepLabV3+ head upsample the ASPP output to its stage-1 input's size rather than to a size
    fixed at construction (the same numbers at that size)."""
    def hybrid_forward(F, x, c1):
        c1 = head.c1_block(c1)
        x = F.contrib.BilinearResize2D(head.aspp(x), like=c1, mode="like")
        return head.block(F.concat(x, c1, dim=1))

    head.hybrid_forward = hybrid_forward
    return head


class DeepLabV3(nn.HybridBlock):
    """DeepLabV3 on a dilated ResNeSt, as GluonCV's ``deeplab_resnest*`` (ASPP rates 12, 24, 36 at output stride 8;
    6, 12, 18 at 16), optionally with DeepLabV3+'s decoder.

    Parameters
    ----------
    backbone : str            any classification model name (``resnest50``, ``resnest101``, ...)
    classes : int             number of classes (e.g. 150 for ADE20K, 21 for Pascal VOC)
    aux : bool                also return the auxiliary FCN head's logits (on stage 3), for GluonCV's
                              ``SoftmaxCrossEntropyLossWithAux``
    pretrained_base : bool or str   the backbone's ImageNet weights (True) or a classification weights file of
                              this project (a path): see :func:`resnest_gluon.dense.build_backbone`
    output_stride : int       8 (GluonCV's: stages 3 and 4 dilated) or 16 (stage 4 dilated, ASPP rates 6, 12, 18:
                              about half the work on CPU; the weights are the same, so either can load the other's)
    decoder : bool            DeepLabV3+'s decoder (Chen et al. 2018; GluonCV's ``deeplabv3_plus._DeepLabHead``):
                              the ASPP output, upsampled to stride 4, joined with stage 1's features through two
                              3x3 convolutions: sharper outlines and small objects at small inputs, for a little work
    norm_layer, norm_kwargs   normalisation everywhere (e.g. ``mx.gluon.contrib.nn.SyncBatchNorm``, ``{"num_devices":
                              n}`` for multi-GPU training, as GluonCV's recipes)

    ``net(x)`` gives the logits at the input's size (``(logits, aux_logits)`` with ``aux``); ``predict(x)`` the main
    logits only. The heads learn at 10x the backbone's rate (``lr_mult``), as in GluonCV.
    """

    def __init__(self, backbone="resnest50", classes=150, aux=True, pretrained_base=False, norm_layer=nn.BatchNorm,
                 norm_kwargs=None, ctx=mx.cpu(), root=None, output_stride=8, decoder=False, **kwargs):
        super().__init__(**kwargs)
        from gluoncv.model_zoo import deeplabv3, deeplabv3_plus
        from gluoncv.model_zoo.fcn import _FCNHead

        if output_stride not in ASPP_RATES:
            raise ValueError(f"output_stride must be 8 (GluonCV's) or 16, got {output_stride}")
        self.aux, self.num_classes, self.backbone_name, self.decoder = aux, classes, backbone, decoder
        norm = dict(norm_layer=norm_layer, norm_kwargs=norm_kwargs)
        heads = deeplabv3_plus if decoder else deeplabv3
        with self.name_scope():
            self.backbone = build_backbone(backbone, pretrained_base, ctx, root, output_stride=output_stride,
                                           out_indices=(1, 3, 4) if decoder else (3, 4), **norm)
            if decoder:
                self.head = _size_free_decoder(heads._DeepLabHead(classes, c1_channels=STAGE1_CHANNELS, **norm))
            else:
                self.head = heads._DeepLabHead(classes, **norm)
            if output_stride != 8:  # the same layers at the rates of the coarser map (DeepLabV3's paper)
                with self.head.name_scope():
                    self.head.aspp = heads._ASPP(2048, list(ASPP_RATES[output_stride]), **norm)
            _size_free_image_pooling(self.head.aspp.concurent[4])
            self.auxlayer = _FCNHead(1024, classes, **norm) if aux else None
        heads = [self.head] + ([self.auxlayer] if aux else [])
        for head in heads:
            head.initialize(ctx=ctx)
            head.collect_params().setattr("lr_mult", 10)

    def hybrid_forward(self, F, x):
        if self.decoder:
            c1, c3, c4 = self.backbone(x)
            out = self.head(c4, c1)
        else:
            c3, c4 = self.backbone(x)
            out = self.head(c4)
        out = F.contrib.BilinearResize2D(out, like=x, mode="like")
        if self.auxlayer is None:
            return out
        return out, F.contrib.BilinearResize2D(self.auxlayer(c3), like=x, mode="like")

    def predict(self, x):
        """The main head's logits at the size of ``x`` (N, classes, H, W)."""
        out = self(x)
        return out[0] if self.aux else out

    @staticmethod
    def gluoncv_name(name):
        """Our parameter name for a name in GluonCV's ``DeepLabV3`` files (its backbone is spread over the model)."""
        return "backbone." + name if name.split(".", 1)[0] in _BACKBONE_CHILDREN else name
