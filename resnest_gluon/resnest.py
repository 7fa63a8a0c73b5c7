"""The ResNeSt network: bottleneck, deep stem, stages, head, multi-stage features.

Attribute names follow the official Gluon code so that its ``.params`` files (and GluonCV's) load by name:
``conv1.<i>`` (deep stem), ``bn1``, ``layer1..4.<j>``, ``conv2`` (split attention), ``downsample.<i>``, ``fc``.
"""
import math

import mxnet as mx
from mxnet.gluon import nn

from .dropblock import DropBlock
from .splat import SplitAttentionConv, fused_attention_off_device

__all__ = ["Bottleneck", "ResNeSt", "FEATURE_STRIDES"]

FEATURE_STRIDES = (2, 4, 8, 16, 32)  # stem, stage 1, 2, 3, 4

# Dense prediction keeps resolution in the last stages: they stop striding and dilate their 3x3 instead, the first
# block of a dilated stage at half the stage's dilation (GluonCV ``dilated=True`` / ``dilation=2``, official code).
# Per output stride: (strides, first block's dilation, the other blocks' dilation) of stages 1-4.
_STAGE_PLANS = {
    32: ((1, 1, 1), (2, 1, 1), (2, 1, 1), (2, 1, 1)),
    16: ((1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 1, 2)),
    8: ((1, 1, 1), (2, 1, 1), (1, 1, 2), (1, 2, 4)),
}


class Bottleneck(nn.HybridBlock):
    """1x1 reduce -> split-attention 3x3 -> 1x1 expand (x4), with a residual connection.

    ``avd``: when the block strides, the 3x3 runs at stride 1 and a 3x3 average pool does the downsampling, before
    (``avd_first``) or after the split-attention convolution. ``last_gamma`` zero-initialises the last BN's gamma.
    ``dilation`` is this block's 3x3 dilation; the first block of a dilated stage has a smaller one than the stage
    (``stage_dilation``) and then, as in GluonCV and the official code, keeps the average pool at stride 1.
    """

    expansion = 4

    def __init__(self, planes, in_channels, strides=1, radix=2, cardinality=1, bottleneck_width=64, avd=True,
                 avd_first=False, downsample=None, last_gamma=False, dropblock_prob=0.0, dropblock_size=3,
                 norm_layer=nn.BatchNorm, norm_kwargs=None, dilation=1, stage_dilation=None, **kwargs):
        super().__init__(**kwargs)
        norm_kwargs = norm_kwargs or {}
        width = int(planes * bottleneck_width / 64) * cardinality
        self.use_avd = avd and (strides > 1 or dilation != (stage_dilation or dilation))
        self.avd_first = avd_first
        self.use_dropblock = dropblock_prob > 0
        with self.name_scope():
            if self.use_dropblock:
                self.dropblock1 = DropBlock(dropblock_prob, dropblock_size)
                self.dropblock2 = DropBlock(dropblock_prob, dropblock_size)
                self.dropblock3 = DropBlock(dropblock_prob, dropblock_size)
            self.conv1 = nn.Conv2D(width, 1, use_bias=False, in_channels=in_channels)
            self.bn1 = norm_layer(in_channels=width, **norm_kwargs)
            self.conv2 = SplitAttentionConv(width, 3, strides=1 if self.use_avd else strides, padding=dilation,
                                            dilation=dilation, radix=radix, cardinality=cardinality, in_channels=width,
                                            norm_layer=norm_layer, norm_kwargs=norm_kwargs)
            self.conv3 = nn.Conv2D(planes * self.expansion, 1, use_bias=False, in_channels=width)
            gamma_init = "zeros" if last_gamma else "ones"
            self.bn3 = norm_layer(in_channels=planes * self.expansion, gamma_initializer=gamma_init, **norm_kwargs)
            if self.use_avd:
                self.avd_layer = nn.AvgPool2D(3, strides, padding=1)
            self.downsample = downsample

    def hybrid_forward(self, F, x):
        out = self.bn1(self.conv1(x))
        if self.use_dropblock:
            out = self.dropblock1(out)
        out = F.Activation(out, act_type="relu")
        if self.use_avd and self.avd_first:
            out = self.avd_layer(out)
        out = self.conv2(out)
        if self.use_dropblock:
            out = self.dropblock2(out)
        if self.use_avd and not self.avd_first:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        if self.use_dropblock:
            out = self.dropblock3(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.Activation(out + shortcut, act_type="relu")


class ResNeSt(nn.HybridBlock):
    """ResNeSt: deep stem, four stages of split-attention bottlenecks, average pool, dropout, dense.

    Parameters
    ----------
    layers : list of 4 int      blocks per stage
    radix, cardinality, bottleneck_width : the split-attention shape (RsKxWd in the paper's notation)
    stem_width : int            width of the deep stem's first two 3x3 convolutions (the third has twice that)
    avd, avd_first : bool       average-pool downsampling inside the first block of stages 2-4
    avg_down : bool             shortcut downsampling by average pool + 1x1 conv instead of a strided 1x1 conv
    last_gamma : bool           zero-initialise the last BN gamma of each block
    dropblock_prob : float      DropBlock probability in stages 3-4 (0 builds no DropBlock at all)
    dropblock_size : int        DropBlock block size
    final_drop : float          dropout before the classifier
    classes : int               number of classes
    features_only : bool        return the stem and stage outputs (``feature_strides``) instead of logits
    out_indices : tuple         which of those five feature maps to return when ``features_only``
    output_stride : int         32 (classification), 16 (stage 4 dilated) or 8 (stages 3-4 dilated): same weights
    dilated : bool              GluonCV's name for ``output_stride=8``
    norm_layer, norm_kwargs     normalisation (e.g. ``mx.gluon.contrib.nn.SyncBatchNorm``)
    """

    def __init__(self, layers, radix=2, cardinality=1, bottleneck_width=64, stem_width=32, avd=True,
                 avd_first=False, avg_down=True, last_gamma=False, dropblock_prob=0.0, dropblock_size=3,
                 final_drop=0.0, classes=1000, features_only=False, out_indices=(0, 1, 2, 3, 4),
                 norm_layer=nn.BatchNorm, norm_kwargs=None, output_stride=32, dilated=False, **kwargs):
        super().__init__(**kwargs)
        if len(layers) != 4:
            raise ValueError(f"layers must list the blocks of 4 stages, got {layers}")
        if dilated and output_stride not in (8, 32):
            raise ValueError(f"dilated=True means output_stride=8, got output_stride={output_stride}")
        output_stride = 8 if dilated else output_stride
        if output_stride not in _STAGE_PLANS:
            raise ValueError(f"output_stride must be one of {sorted(_STAGE_PLANS)}, got {output_stride}")
        if features_only and not set(out_indices) <= set(range(5)):
            raise ValueError(f"out_indices must be within 0..4 (stem, stages 1-4), got {out_indices}")
        norm_kwargs = dict(norm_kwargs or {})
        self.features_only = features_only
        self.out_indices = tuple(out_indices)
        self.num_classes = classes
        self.output_stride = output_stride
        plan = _STAGE_PLANS[output_stride]
        self.feature_strides = (2,) + tuple(4 * math.prod(p[0] for p in plan[:i + 1]) for i in range(4))
        block_kwargs = dict(radix=radix, cardinality=cardinality, bottleneck_width=bottleneck_width, avd=avd,
                            avd_first=avd_first, last_gamma=last_gamma, norm_layer=norm_layer,
                            norm_kwargs=norm_kwargs)
        with self.name_scope():
            self.conv1 = nn.HybridSequential(prefix="conv1_")
            with self.conv1.name_scope():
                self.conv1.add(nn.Conv2D(stem_width, 3, 2, 1, use_bias=False, in_channels=3),
                               norm_layer(in_channels=stem_width, **norm_kwargs), nn.Activation("relu"),
                               nn.Conv2D(stem_width, 3, 1, 1, use_bias=False, in_channels=stem_width),
                               norm_layer(in_channels=stem_width, **norm_kwargs), nn.Activation("relu"),
                               nn.Conv2D(stem_width * 2, 3, 1, 1, use_bias=False, in_channels=stem_width))
            self.bn1 = norm_layer(in_channels=stem_width * 2, **norm_kwargs)
            self.maxpool = nn.MaxPool2D(3, 2, 1)
            in_channels = stem_width * 2
            for index, (planes, blocks, stage_plan) in enumerate(zip((64, 128, 256, 512), layers, plan), start=1):
                drop = dict(dropblock_prob=dropblock_prob, dropblock_size=dropblock_size) if index >= 3 else {}
                stage = self._make_stage(index, planes, blocks, in_channels, stage_plan, avg_down, block_kwargs,
                                         drop)
                setattr(self, f"layer{index}", stage)
                in_channels = planes * Bottleneck.expansion
            self.num_features = in_channels
            if not features_only:
                self.drop = nn.Dropout(final_drop) if final_drop > 0 else None
                self.fc = nn.Dense(classes, in_units=in_channels)

    @staticmethod
    def _make_stage(index, planes, blocks, in_channels, plan, avg_down, block_kwargs, drop_kwargs):
        strides, first_dilation, dilation = plan
        out_channels = planes * Bottleneck.expansion
        stage = nn.HybridSequential(prefix=f"layers{index}_")
        with stage.name_scope():
            for i in range(blocks):
                downsample = None
                if i == 0 and (strides != 1 or in_channels != out_channels):
                    downsample = nn.HybridSequential(prefix=f"down{index}_")
                    with downsample.name_scope():
                        if avg_down:
                            downsample.add(nn.AvgPool2D(strides, strides, ceil_mode=True, count_include_pad=False)
                                           if strides > 1 else nn.HybridLambda(lambda F, x: x))
                        downsample.add(nn.Conv2D(out_channels, 1, 1 if avg_down else strides, use_bias=False,
                                                 in_channels=in_channels),
                                       block_kwargs["norm_layer"](in_channels=out_channels,
                                                                  **block_kwargs["norm_kwargs"]))
                stage.add(Bottleneck(planes, in_channels if i == 0 else out_channels, strides if i == 0 else 1,
                                     downsample=downsample, dilation=first_dilation if i == 0 else dilation,
                                     stage_dilation=dilation, **block_kwargs, **drop_kwargs))
        return stage

    def forward(self, x, *args):
        fused_attention_off_device(self, x)  # the fused split-attention operator is CPU-only
        return super().forward(x, *args)

    def hybrid_forward(self, F, x):
        x = F.Activation(self.bn1(self.conv1(x)), act_type="relu")
        features = [x]
        x = self.maxpool(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        if self.features_only:
            outs = [features[i] for i in self.out_indices]
            return outs[0] if len(outs) == 1 else tuple(outs)
        x = F.Pooling(x, kernel=(1, 1), pool_type="avg", global_pool=True).reshape((0, -1))
        if self.drop is not None:
            x = self.drop(x)
        return self.fc(x)

    def reset_classifier(self, classes, ctx=None, init=None):
        """Replaces the classifier with a fresh ``Dense(classes)`` (fine-tuning), initialised on ``ctx``."""
        if self.features_only:
            raise ValueError("this network was built with features_only=True and has no classifier")
        if ctx is None:
            ctx = self.fc.weight.list_ctx() if self.fc.weight._data is not None else [mx.cpu()]
        with self.name_scope():
            self.fc = nn.Dense(classes, in_units=self.num_features)
        self.fc.initialize(init or mx.init.Xavier(), ctx=ctx)
        self.num_classes = classes
        return self
