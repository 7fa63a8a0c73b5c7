"""The model family: registry, exact parameter counts, data configs, heads, features, export, weight loading."""
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

import resnest_gluon
from resnest_gluon import FEATURE_STRIDES, count_flops, count_params, get_config, get_model, list_models, load_weights
from conftest import REPO, randomize_bn, run_python

# the family table of the spec: (official Gluon name, timm name, trainable parameters)
FAMILY = [
    ("resnest14", "resnest14d", 10_611_688),
    ("resnest26", "resnest26d", 17_069_448),
    ("resnest50", "resnest50d", 27_483_240),
    ("resnest101", "resnest101e", 48_275_016),
    ("resnest200", "resnest200e", 70_201_544),
    ("resnest269", "resnest269e", 110_929_480),
    ("resnest50_fast_1s4x24d", "resnest50d_1s4x24d", 25_677_000),
    ("resnest50_fast_4s2x40d", "resnest50d_4s2x40d", 30_417_592),
]
FAST = ["resnest50_fast_" + c for c in ("1s1x64d", "2s1x64d", "4s1x64d", "1s2x40d", "2s2x40d", "4s2x40d", "1s4x24d")]


def test_every_family_name_is_registered_with_a_constructor():
    names = {n for pair in FAMILY for n in pair[:2]} | set(FAST)
    assert names == set(list_models())
    for name in names:
        constructor = getattr(resnest_gluon, name)
        assert constructor.__name__ == name
    assert list_models("resnest50d*") == ["resnest50d", "resnest50d_1s4x24d", "resnest50d_4s2x40d"]


@pytest.mark.parametrize("gluon_name,timm_name,params", FAMILY)
def test_trainable_parameter_counts_are_exact(gluon_name, timm_name, params):
    for name in (gluon_name, timm_name):
        net = get_model(name)
        assert count_params(net) == params, name
        assert get_config(name).params == params


def test_flops_follow_the_paper_convention():
    net = get_model("resnest50")
    net.initialize()
    assert round(count_flops(net) / 1e9, 2) == 10.74  # 5.37 G multiply-adds at 224 px
    assert count_flops(net, 448) > 3.9 * count_flops(net, 224)


def test_data_configs_travel_with_the_model():
    net = get_model("resnest200e")
    assert (net.data_config.input_size, net.data_config.crop_pct, net.data_config.interpolation) == \
        (320, 0.909, "bicubic")
    assert get_config("resnest50").data.to_dict() == {
        "input_size": 224, "crop_pct": 0.875, "interpolation": "bilinear",
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert get_config("resnest269").data.input_size == 416 and get_config("resnest269").data.crop_pct == 416 / 448
    assert get_config("resnest101").data.input_size == 256
    assert get_config("resnest50d_1s4x24d").data.interpolation == "bicubic"


def test_models_train_at_the_official_recipe_size_and_test_larger():
    # ResNeSt-101 trains at 224 (GluonCV resnest101.sh: --input-size 224) and is evaluated at 256
    sizes = {name: get_config(name).train_input_size for name in list_models()}
    assert {n: s for n, s in sizes.items() if s != 224} == {"resnest200": 256, "resnest200e": 256,
                                                            "resnest269": 320, "resnest269e": 320}
    assert get_config("resnest101").data.input_size == 256


def test_official_large_models_use_final_dropout():
    assert get_config("resnest200").arch["final_drop"] == 0.2 and get_config("resnest269").arch["final_drop"] == 0.2
    assert get_model("resnest200").drop is not None and get_model("resnest50").drop is None


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="resnest50d") as err:
        get_model("resnest50dd")
    assert "unknown model 'resnest50dd'" in str(err.value)
    with pytest.raises(ValueError, match="Known models"):
        get_model("vit_base")


@pytest.mark.parametrize("name", ["resnest14", "resnest50_fast_1s4x24d", "resnest50_fast_4s2x40d",
                                  "resnest50_fast_1s1x64d"])
def test_forward_shapes_and_classes(name):
    net = get_model(name, classes=7)
    net.initialize(mx.init.Xavier())
    assert net(mx.nd.random.uniform(shape=(2, 3, 64, 64))).shape == (2, 7)


def test_reset_classifier_for_fine_tuning():
    net = get_model("resnest14")
    net.initialize()
    net.hybridize()
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    assert net(x).shape == (1, 1000)
    stem = net.conv1[0].weight.data().copy()
    net.reset_classifier(5)
    assert net(x).shape == (1, 5) and net.num_classes == 5
    np.testing.assert_array_equal(net.conv1[0].weight.data().asnumpy(), stem.asnumpy())  # backbone kept


def test_multi_stage_features_for_detection_backbones(tmp_path):
    net = get_model("resnest14", features_only=True)
    net.initialize()
    net.hybridize()
    feats = net(mx.nd.random.uniform(shape=(1, 3, 128, 96)))
    assert [f.shape for f in feats] == [(1, 64, 64, 48), (1, 256, 32, 24), (1, 512, 16, 12), (1, 1024, 8, 6),
                                        (1, 2048, 4, 3)]
    assert FEATURE_STRIDES == (2, 4, 8, 16, 32)
    c4 = get_model("resnest14", features_only=True, out_indices=(4,))
    c4.initialize()
    assert c4(mx.nd.ones((1, 3, 64, 64))).shape == (1, 2048, 2, 2)
    assert not hasattr(net, "fc")
    # a backbone loads a classification weight file (its classifier is left out) and computes the same features
    full = get_model("resnest14", features_only=False)
    full.initialize()
    randomize_bn(full)
    path = str(tmp_path / "full.params")
    full.save_parameters(path)
    backbone = load_weights(get_model("resnest14", features_only=True), path)
    np.testing.assert_array_equal(backbone.conv1[0].weight.data().asnumpy(), full.conv1[0].weight.data().asnumpy())
    with pytest.raises(ValueError, match="out_indices"):
        get_model("resnest14", features_only=True, out_indices=(5,))


@pytest.mark.parametrize("output_stride, strides", [(16, (2, 4, 8, 16, 16)), (8, (2, 4, 8, 8, 8))])
def test_dilated_backbones_keep_resolution_and_take_the_classification_weights(output_stride, strides, tmp_path):
    """Dense prediction: the last stages stop striding and dilate instead; the parameters are the classification
    model's, name for name and shape for shape, so its weight file loads unchanged."""
    full = get_model("resnest26")
    full.initialize()
    randomize_bn(full)
    path = str(tmp_path / "full.params")
    full.save_parameters(path)
    net = load_weights(get_model("resnest26", features_only=True, output_stride=output_stride), path)
    net.hybridize()
    feats = net(mx.nd.random.uniform(shape=(1, 3, 128, 96)))
    assert net.feature_strides == strides
    assert [f.shape[2:] for f in feats] == [(128 // s, 96 // s) for s in strides]
    dilations = [b.conv2.conv._kwargs["dilate"] for b in net.layer4]
    assert dilations == ([(1, 1), (2, 2)] if output_stride == 16 else [(2, 2), (4, 4)])
    assert net.layer4[0].use_avd  # GluonCV's first dilated block keeps its average pool, at stride 1
    assert get_model("resnest26", dilated=True).output_stride == 8
    with pytest.raises(ValueError, match="output_stride must be one of"):
        get_model("resnest26", output_stride=4)


def test_hybridize_export_and_symbolblock_round_trip(tmp_path):
    net = get_model("resnest14")
    net.initialize(mx.init.Xavier())
    randomize_bn(net)
    x = mx.nd.random.uniform(shape=(2, 3, 64, 64))
    eager = net(x).asnumpy()
    net.hybridize(static_alloc=True, static_shape=True)
    np.testing.assert_allclose(net(x).asnumpy(), eager, rtol=1e-5, atol=1e-5)
    prefix = str(tmp_path / "resnest14")
    net.export(prefix, epoch=0)
    imported = gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
    np.testing.assert_allclose(imported(x).asnumpy(), eager, rtol=1e-5, atol=1e-5)
    # the exported file also loads back into a Gluon model by name
    again = load_weights(get_model("resnest14"), prefix + "-0000.params")
    np.testing.assert_allclose(again(x).asnumpy(), eager, rtol=1e-5, atol=1e-5)


def test_save_and_load_parameters(tmp_path):
    net = get_model("resnest14", classes=10)
    net.initialize(mx.init.Xavier())
    randomize_bn(net)
    path = str(tmp_path / "w.params")
    net.save_parameters(path)
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    other = load_weights(get_model("resnest14", classes=10), path)
    np.testing.assert_array_equal(other(x).asnumpy(), net(x).asnumpy())
    # a file saved with DropBlock state loads into a model without DropBlock, and the other way round
    with_db = load_weights(get_model("resnest14", classes=10, dropblock_prob=0.1), path)
    with_db.save_parameters(str(tmp_path / "db.params"))
    load_weights(get_model("resnest14", classes=10), str(tmp_path / "db.params"))


def test_loading_a_mismatched_file_names_the_model(tmp_path):
    net = get_model("resnest14", classes=10)
    net.initialize()
    path = str(tmp_path / "ten.params")
    net.save_parameters(path)
    with pytest.raises(ValueError, match="does not fit model resnest14") as err:
        load_weights(get_model("resnest14"), path)
    assert "classes=10" in str(err.value) and "reset_classifier" in str(err.value)
    with pytest.raises(ValueError, match="does not fit model resnest26") as err:
        load_weights(get_model("resnest26", classes=10), path)
    assert "missing" in str(err.value)
    with pytest.raises(ValueError, match="does not fit model resnest50_fast_4s2x40d"):
        load_weights(get_model("resnest50_fast_4s2x40d", classes=10), path)
    junk = tmp_path / "junk.params"
    junk.write_bytes(b"not a params file")
    with pytest.raises(ValueError, match="junk.params"):
        load_weights(get_model("resnest14"), str(junk))


def test_training_step_at_batch_size_one():
    # timm's SplitAttn fails here (BN over a 1x1 map in training); ours trains
    net = get_model("resnest14", classes=3)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    with autograd.record():
        loss = loss_fn(net(mx.nd.random.uniform(shape=(1, 3, 64, 64))), mx.nd.array([1]))
    loss.backward()
    trainer.step(1)
    assert np.isfinite(loss.asnumpy()).all()
    assert np.isfinite(net.fc.weight.data().asnumpy()).all()


def test_library_does_not_import_gluoncv_or_torch():
    proc = run_python("import sys, resnest_gluon, resnest.gluon; "
                      "print(sorted(m for m in ('gluoncv', 'torch', 'timm') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_resnest_gluon_alias_is_one_copy():
    proc = run_python(
        "import resnest_gluon, resnest_gluon.zoo\n"
        "from resnest.gluon import resnest50, get_model\n"
        "import resnest.gluon, resnest.gluon.zoo, resnest.gluon.splat\n"
        "assert resnest.gluon is resnest_gluon\n"
        "assert resnest50 is resnest_gluon.resnest50 and get_model is resnest_gluon.get_model\n"
        "assert resnest.gluon.zoo is resnest_gluon.zoo and resnest.gluon.splat is resnest_gluon.splat\n"
        "print(resnest.gluon.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == os.path.join(REPO, "resnest_gluon", "__init__.py")
