"""Dense prediction on our backbone with GluonCV's heads: GluonCV's files load by name and give the same outputs.

gluoncv is a reference here (installed in .venv): the library imports it only when a dense model is built.
"""
import warnings

import mxnet as mx
import numpy as np
import pytest

from conftest import randomize_bn, run_python
from resnest_gluon import get_model
from resnest_gluon.dense import list_dense_models, load_gluoncv_params, randomize
from resnest_gluon.dense.detection import MASK_RCNN_SETTINGS, zero_masked_roi_align

from gluoncv import model_zoo as gluoncv_zoo  # noqa: E402
from gluoncv.model_zoo.deeplabv3 import DeepLabV3 as GluonCVDeepLabV3  # noqa: E402
from gluoncv.model_zoo.rcnn.mask_rcnn.mask_rcnn import custom_mask_rcnn_fpn  # noqa: E402


def gluoncv_deeplab(backbone, classes, height, width, path=None):
    """GluonCV's DeepLabV3 (its output size is fixed when built), random weights, or the weights of ``path``."""
    ref = GluonCVDeepLabV3(classes, backbone=backbone, pretrained_base=False, height=height, width=width)
    if path:
        ref.load_parameters(path)
        return ref
    with warnings.catch_warnings():  # its heads were initialised by its constructor
        warnings.simplefilter("ignore")
        ref.initialize(mx.init.Xavier(magnitude=2))
    return randomize_bn(ref, seed=3)


def test_deeplab_loads_gluoncvs_file_and_matches_it_at_any_size(tmp_path):
    """GluonCV's deeplab_resnest50 layout (as its ADE20K file) loads into ours; main and auxiliary logits agree
    within 1e-4 at the size GluonCV was built for and, hybridized, at another size, where GluonCV needs a new model."""
    mx.random.seed(3)
    ref = gluoncv_deeplab("resnest50", 150, 96, 96)
    path = str(tmp_path / "deeplab_resnest50_ade.params")
    ref.save_parameters(path)
    net = load_gluoncv_params(get_model("deeplab_resnest50", classes=150), path)
    net.hybridize(static_alloc=True)
    for h, w in ((96, 96), (64, 128)):
        x = mx.nd.random.uniform(-2, 2, shape=(1, 3, h, w))
        expected = (ref if (h, w) == (96, 96) else gluoncv_deeplab("resnest50", 150, h, w, path))(x)
        out, aux = net(x)
        assert out.shape == aux.shape == (1, 150, h, w)
        assert expected[0].asnumpy().std() > 1e-2
        np.testing.assert_allclose(out.asnumpy(), expected[0].asnumpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(aux.asnumpy(), expected[1].asnumpy(), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(net.predict(x).asnumpy(), out.asnumpy())


def test_deeplab_on_every_backbone_with_named_classes_and_heads_at_10x():
    net = get_model("deeplab_resnest14", classes=["sky", "road", "car"], aux=False)
    net.backbone.initialize()
    assert net.class_names == ["sky", "road", "car"] and net.backbone.output_stride == 8
    assert net(mx.nd.ones((1, 3, 40, 56))).shape == (1, 3, 40, 56)
    params = net._collect_params_with_prefix()
    assert all(p.lr_mult == (10 if k.startswith("head.") else 1) for k, p in params.items())
    assert set(list_dense_models("deeplab_*")) == {"deeplab_" + n for n in __import__("resnest_gluon").list_models()}
    sync = get_model("deeplab_resnest14", classes=3, norm_layer=mx.gluon.contrib.nn.SyncBatchNorm,
                     norm_kwargs={"num_devices": 1})  # multi-GPU training, as GluonCV's recipes
    assert {type(b).__name__ for b in (sync.backbone.bn1, sync.head.block[1], sync.auxlayer.block[1])} == {
        "SyncBatchNorm"}
    with pytest.raises(ValueError, match="publishes no deeplab_resnest50 weights"):
        get_model("deeplab_resnest50", pretrained=True, classes=150)


def test_deeplab_decoder_is_gluoncvs_deeplabv3_plus_head_at_any_size(tmp_path):
    """``decoder=True`` (DeepLabV3+): GluonCV's own head class on stage 1 and 4 features; at the size GluonCV builds
    it for, the same numbers as GluonCV's; hybridized, any size; a saved model rebuilds it from its file alone."""
    from gluoncv.model_zoo.deeplabv3_plus import _DeepLabHead as GluonCVPlusHead

    from resnest_gluon.trained import load_trained, save_trained

    net = randomize(get_model("deeplab_resnest14", classes=4, decoder=True, output_stride=16), seed=5)
    x = mx.nd.random.uniform(-2, 2, shape=(1, 3, 64, 64))
    c1, _, c4 = net.backbone(x)
    assert c1.shape == (1, 256, 16, 16) and c4.shape == (1, 2048, 4, 4)
    ref = GluonCVPlusHead(4, c1_channels=256, height=16, width=16)
    with ref.name_scope():  # output stride 16: the ASPP rates of the coarser map, as ours
        ref.aspp = __import__("gluoncv").model_zoo.deeplabv3_plus._ASPP(2048, [6, 12, 18], mx.gluon.nn.BatchNorm,
                                                                        None, height=4, width=4)
    path = str(tmp_path / "head.params")
    net.head.save_parameters(path)
    ref.load_parameters(path)
    expected = ref(c4, c1)
    assert expected.asnumpy().std() > 1e-2
    np.testing.assert_allclose(net.head(c4, c1).asnumpy(), expected.asnumpy(), rtol=0, atol=1e-4)
    net.hybridize(static_alloc=True)
    out, aux = net(mx.nd.ones((2, 3, 40, 72)))
    assert out.shape == aux.shape == (2, 4, 40, 72)
    save_trained(net, str(tmp_path / "seg.params"))
    again = load_trained(str(tmp_path / "seg.params"))
    assert again.decoder and again.backbone.output_stride == 16
    np.testing.assert_allclose(again.predict(x).asnumpy(), net.predict(x).asnumpy(), rtol=0, atol=1e-5)


def test_importing_the_package_does_not_import_gluoncv():
    proc = run_python("import sys, resnest_gluon, resnest_gluon.dense; print('gluoncv' in sys.modules)")
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr[-2000:]


def assert_same_detections(expected, got, min_count=1000, unmatched_share=0.001):
    """The same detections (class id, score within 1e-5, box within 0.1 px: box deltas are scaled by anchors of up to
    512 px), compared as sets: with random weights every score is near 1 / classes, so float rounding reorders rows,
    and among thousands of near-equal boxes an NMS decision may flip: at most ``unmatched_share`` of the detections
    may have no counterpart. More than ``min_count`` detections are expected. Returns the matched rows,
    ``(row in expected, row in got)`` pairs (the closest box when several fit).
    """
    (ids, scores, boxes), (ids2, scores2, boxes2) = ([a.asnumpy()[0] for a in d[:3]] for d in (expected, got))
    valid, valid2 = ids[:, 0] >= 0, ids2[:, 0] >= 0
    assert valid.sum() > min_count and abs(int(valid.sum()) - int(valid2.sum())) <= 0.001 * valid.sum()
    rows = np.flatnonzero(valid)[np.argsort(scores[valid, 0])]
    pairs = []
    for j in np.flatnonzero(valid2):
        lo, hi = np.searchsorted(scores[rows, 0], [scores2[j, 0] - 1e-5, scores2[j, 0] + 1e-5])
        near = rows[lo:hi]
        dist = np.abs(boxes[near] - boxes2[j]).max(axis=1)
        fits = (ids[near, 0] == ids2[j, 0]) & (dist < 0.1)
        if fits.any():
            pairs.append((near[fits][np.argmin(dist[fits])], j))
    unmatched = int(valid2.sum()) - len(pairs)
    assert unmatched <= unmatched_share * valid.sum(), unmatched
    return pairs


@pytest.mark.parametrize("backbone", ["resnest50", "resnest101"])
def test_faster_rcnn_fpn_loads_gluoncvs_file_and_detects_the_same(backbone, tmp_path):
    """GluonCV's faster_rcnn_fpn_syncbn_<backbone>_coco (random weights, saved) loads into ours: same class ids,
    scores and boxes on the same image."""
    shape = (1, 3, 160, 224)
    ref = randomize(gluoncv_zoo.get_model(f"faster_rcnn_fpn_syncbn_{backbone}_coco", pretrained=False,
                                                pretrained_base=False), seed=4)
    zero_masked_roi_align(ref)  # else its pooled features read stale memory on CPU (see the test below)
    path = str(tmp_path / f"faster_rcnn_fpn_syncbn_{backbone}_coco.params")
    ref.save_parameters(path)
    net = load_gluoncv_params(get_model(f"faster_rcnn_fpn_{backbone}", classes=ref.classes), path)
    assert net.classes == ref.classes and net.class_names == list(ref.classes)
    x = mx.nd.random.uniform(-2, 2, shape=shape)
    for theirs, ours in zip(ref.features(x), net.features(x)):  # the FPN levels the heads read
        np.testing.assert_allclose(ours.asnumpy(), theirs.asnumpy(), rtol=1e-4, atol=1e-4)
    # with random weights ~20000 detections tie within 3e-3 in score: on an AVX-512 CPU the features' last-digit
    # differences (7e-6 of 4) reorder 1.3 % of them for resnest101 (289 of 22568 measured), hence 2 %
    assert_same_detections(ref(x), net(x), unmatched_share=0.02)
    own = str(tmp_path / "ours.params")
    net.save_parameters(own)  # our own files carry our names and load back as they are
    again = get_model(f"faster_rcnn_fpn_{backbone}", classes=ref.classes)
    again.load_parameters(own)
    theirs = again._collect_params_with_prefix()
    assert all(np.array_equal(p.data().asnumpy(), theirs[k].data().asnumpy())
               for k, p in net._collect_params_with_prefix().items())


def test_masked_rois_pool_to_zeros():
    """MXNet's CPU ROIAlign writes one number of an RoI of batch index -1 and leaves the rest as the memory was
    (GluonCV's FPN pooling masks each level's RoIs that way, then sums the levels); ours gives zeros, nd and sym."""
    from resnest_gluon.dense.detection import _with_zeroed_roi_align

    feat = mx.nd.random.uniform(shape=(1, 4, 16, 16))
    rois = mx.nd.array([[-1, 0, 0, 8, 8], [0, 2, 2, 12, 9], [-1, 1, 1, 4, 4]])
    expected = mx.nd.contrib.ROIAlign(feat, rois[1:2], (7, 7), 0.5, sample_ratio=2).asnumpy()
    out = _with_zeroed_roi_align(mx.nd).contrib.ROIAlign(feat, rois, (7, 7), 0.5, sample_ratio=2).asnumpy()
    assert not out[[0, 2]].any() and np.array_equal(out[1:2], expected)
    F = _with_zeroed_roi_align(mx.sym)
    sym = F.contrib.ROIAlign(mx.sym.var("data"), mx.sym.var("rois"), (7, 7), 0.5, sample_ratio=2)
    assert np.array_equal(sym.eval(data=feat, rois=rois)[0].asnumpy(), out)
    assert "box_encode" in F.contrib.__dict__  # what GluonCV looks at to pick this pooling


def test_mask_rcnn_fpn_loads_gluoncvs_file_and_gives_the_same_detections_and_masks(tmp_path):
    """GluonCV's custom_mask_rcnn_fpn(base_network_name='resnest50', SyncBatchNorm in the backbone, FPN and box
    head) with our settings (random weights, saved) loads into ours: same class ids, scores and boxes on the same image,
    and the masks of matched detections within 1e-4 (measured: up to 5e-6, boxes 3e-5 px, none unmatched).

    Both keep 100 RPN proposals at test time (GluonCV: 1000), so at most 100 detections, to keep this fast (the
    4-conv mask head runs on every kept detection); the reference gets the same zeroed pooling of masked RoIs as ours:
    without it, a call after the first read stale memory and gave other scores (up to 0.31 instead of 0.26)."""
    shape, classes, settings = (1, 3, 160, 224), ["cat", "dog", "person"], dict(rpn_test_post_nms=100)
    ref = custom_mask_rcnn_fpn(
        classes, pretrained_base=False, base_network_name="resnest50", norm_layer=mx.gluon.contrib.nn.SyncBatchNorm,
        norm_kwargs={}, sym_norm_layer=mx.sym.contrib.SyncBatchNorm, sym_norm_kwargs={},
        **{k: v for k, v in dict(MASK_RCNN_SETTINGS, **settings).items() if k != "train_patterns"})  # it sets that
    ref = zero_masked_roi_align(randomize(ref, seed=4))
    path = str(tmp_path / "custom_mask_rcnn_fpn_resnest50.params")
    ref.save_parameters(path)
    net = load_gluoncv_params(get_model("mask_rcnn_fpn_resnest50", classes=classes, **settings), path)
    assert type(net) is type(ref) and net.classes == ref.classes and net.class_names == classes
    assert (net._roi_size, net._target_roi_size, net._rcnn_max_dets) == ((14, 14), (28, 28), 100)
    x = mx.nd.random.uniform(-2, 2, shape=shape)
    expected, got = ref(x), net(x)
    assert got[3].shape == expected[3].shape == (1, 100, 28, 28)
    pairs = assert_same_detections(expected, got, min_count=50)
    rows, rows2 = np.array(pairs).T
    masks, masks2 = expected[3].asnumpy()[0][rows], got[3].asnumpy()[0][rows2]
    assert masks.std() > 0.1
    np.testing.assert_allclose(masks2, masks, rtol=0, atol=1e-4)
    own = str(tmp_path / "ours.params")
    net.save_parameters(own)  # our own files carry our names and load back as they are
    again = get_model("mask_rcnn_fpn_resnest50", classes=classes, **settings)
    again.load_parameters(own)
    theirs = again._collect_params_with_prefix()
    assert all(np.array_equal(p.data().asnumpy(), theirs[k].data().asnumpy())
               for k, p in net._collect_params_with_prefix().items())


def test_mask_rcnn_fpn_on_every_backbone_is_custom_mask_rcnn_fpn():
    """GluonCV's MaskRCNN with custom_mask_rcnn_fpn's layout: box head pooled to 7x7 first, SyncBatchNorm over
    ``num_devices`` in the box head and FPN, a mask head of 4 convolutions and a deconvolution without normalisation."""
    from gluoncv.model_zoo.rcnn.mask_rcnn.mask_rcnn import MaskRCNN

    net = get_model("mask_rcnn_fpn_resnest14", classes=["cat", "dog"], num_devices=2)
    assert isinstance(net, MaskRCNN) and net.classes == ["cat", "dog"] and net.num_class == 2
    box = [type(b).__name__ for b in net.box_features]
    assert box == ["AvgPool2D"] + ["Conv2D", "SyncBatchNorm", "Activation"] * 4 + ["Dense", "Activation"]
    assert net.box_features[2]._kwargs["ndev"] == 2
    assert [type(b).__name__ for b in net.mask.deconv] == ["Conv2D", "Activation"] * 4 + ["Conv2DTranspose"]
    assert net.mask.deconv[0]._channels == 256 and net._target_roi_size == (28, 28) and net._rcnn_max_dets == 1000
    assert set(list_dense_models("mask_rcnn_fpn_*")) == {
        "mask_rcnn_fpn_" + n for n in __import__("resnest_gluon").list_models()}
