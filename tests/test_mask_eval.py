"""COCO mask AP beside box AP (resnest_gluon.dense.detection_eval, scripts/eval_detection.py) for Mask R-CNN on
records packed with --masks: computed over the same objects as the box AP (difficult ones as crowds), each
detection's 28x28 mask pasted into its box as GluonCV's fill does; an oracle with perfect masks scores 1.0 through
evaluate_detection, one whose masks cover 3/4 of each object keeps box AP 1.0 and loses mask AP at the strict IoUs;
a random Mask R-CNN on generated scenes gets a mask AP in the report, records without masks a note naming --masks."""
import os

import mxnet as mx
import numpy as np
import pytest

from conftest import load_script
from resnest_gluon.config import DenseDataConfig
from resnest_gluon.data.detection_masks import MaskedDetectionRecordDataset, encode_instance_masks, \
    encode_masked_detection_record
from resnest_gluon.dense.detection_eval import DetectionMetrics, encode_masks, evaluate_detection, mask_rles, \
    paste_masks

CLASSES = ["box", "slab"]
# (w, h, [(class, x1, y1, x2, y2, difficult)]) inclusive pixel corners; every object's mask fills its box
IMAGES = [(80, 60, [(0, 5, 5, 30, 40, 0), (1, 40, 10, 75, 55, 0)]),
          (64, 64, [(0, 2, 30, 40, 62, 0), (0, 45, 3, 60, 20, 1)]),  # a difficult one the oracle does not find
          (72, 56, [(1, 10, 8, 60, 50, 0)])]


def _rect_mask(w, h, x1, y1, x2, y2):
    m = np.zeros((h, w), np.uint8)
    m[y1: y2 + 1, x1: x2 + 1] = 1
    return m


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    import cv2

    prefix = str(tmp_path_factory.mktemp("maskeval") / "rects")
    writer = mx.recordio.MXIndexedRecordIO(prefix + ".idx", prefix + ".rec", "w")
    rng = np.random.RandomState(0)
    for i, (w, h, objects) in enumerate(IMAGES):
        image = rng.randint(0, 255, (h, w, 3)).astype(np.uint8)
        label = [2, 6] + [v for c, x1, y1, x2, y2, d in objects for v in (c, x1 / w, y1 / h, x2 / w, y2 / h, d)]
        masks = encode_instance_masks([_rect_mask(w, h, *o[1:5]) for o in objects])
        png = cv2.imencode(".png", image)[1].tobytes()
        writer.write_idx(i, encode_masked_detection_record(i, np.array(label, np.float32), png, masks))
    writer.close()
    with open(prefix + "_classes.txt", "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    return prefix


class MaskOracle:
    """A "Mask R-CNN" that knows the answers: each record's non-difficult objects, boxes scaled into the resized
    image it is given, each with a 28x28 mask of ones in its first ``fill`` columns (1.0: the whole box); a padding
    row (id -1) follows. ``mask`` and ``mask_target`` make it a mask model for the evaluation."""

    mask = mask_target = None

    def __init__(self, dataset, fill=1.0):
        self.truth, self.calls, self.fill = [dataset[i] for i in range(len(dataset))], 0, fill

    def __call__(self, x):
        img, objects, _ = self.truth[self.calls]
        self.calls += 1
        objects = objects[objects[:, 5] == 0]
        (h, w), (new_h, new_w) = img.shape[:2], x.shape[2:]
        boxes = objects[:, :4] * np.array([new_w / w, new_h / h, new_w / w, new_h / h], np.float32)
        n = len(objects)
        masks = np.zeros((n + 1, 28, 28), np.float32)
        masks[:n, :, :int(round(28 * self.fill))] = 1
        ids = np.append(objects[:, 4], -1).reshape(1, n + 1, 1)
        scores = np.append(np.linspace(0.9, 0.5, n), -1).reshape(1, n + 1, 1)
        return (mx.nd.array(ids), mx.nd.array(scores), mx.nd.array(np.concatenate([boxes, -np.ones((1, 4))])[None]),
                mx.nd.array(masks[None]))


def test_perfect_masks_score_one_through_the_evaluation_and_three_quarter_masks_lose_only_mask_ap(records):
    dataset = MaskedDetectionRecordDataset(records + ".rec")
    config = DenseDataConfig(48, 96)  # resized: only an exact scale back and paste finds the objects
    perfect = evaluate_detection(MaskOracle(dataset), dataset, data_config=config, class_names=CLASSES,
                                 progress=False).result
    assert perfect.images == 3 and perfect.num_gt == [2, 2] and perfect.num_difficult == [1, 0]
    assert perfect.coco_map == pytest.approx(1.0) and perfect.mask_map == pytest.approx(1.0)
    assert perfect.mask_ap == [pytest.approx(1.0)] * 2 and perfect.mask_map50 == pytest.approx(1.0)

    partial = evaluate_detection(MaskOracle(dataset, fill=0.75), dataset, data_config=config, class_names=CLASSES,
                                 progress=False).result
    assert partial.coco_map == pytest.approx(1.0)  # the boxes are still right
    # mask IoU ~0.75 with each object: a hit at IoU thresholds .50-.70 (or .75), a miss above
    assert 0.5 <= partial.mask_map <= 0.6 and partial.mask_map50 == pytest.approx(1.0)
    assert partial.mask_map75 is not None and partial.mask_map75 <= 1.0
    d = partial.to_dict()
    assert d["mask_map"] == partial.mask_map and [c["mask_ap"] for c in d["per_class"]] == partial.mask_ap

    boxes_only = evaluate_detection(MaskOracle(dataset), dataset, data_config=config, class_names=CLASSES,
                                    metrics=("voc07", "coco"), progress=False).result
    assert boxes_only.mask_map is None and boxes_only.mask_ap is None


def test_masks_pair_with_their_objects_and_difficult_ones_are_crowds():
    w, h = 50, 40
    a, b, hard = _rect_mask(w, h, 2, 2, 20, 30), _rect_mask(w, h, 25, 5, 45, 35), _rect_mask(w, h, 30, 0, 49, 10)
    gt_boxes, gt_ids, difficult = [[2, 2, 20, 30], [25, 5, 45, 35], [30, 0, 49, 10]], [0, 0, 0], [0, 0, 1]

    def score(masks):
        metrics = DetectionMetrics(["a"], metrics=("coco", "mask"))
        metrics.update(gt_boxes[:2], [0, 0], [0.9, 0.8], gt_boxes, gt_ids, difficult, masks=masks,
                       gt_masks=[a, b, hard])
        return metrics.result()

    right = score([a, b])
    assert right.coco_map == pytest.approx(1.0) and right.mask_map == pytest.approx(1.0)
    # masks are matched by mask IoU, whatever their boxes: swapped, both objects are still found (RLEs work too)
    assert score(encode_masks(np.stack([b, a]))).mask_map == pytest.approx(1.0)
    # the second detection's mask on the difficult object: ignored (a crowd), and object b is missed
    on_crowd = score([a, hard])
    assert on_crowd.coco_map == pytest.approx(1.0) and on_crowd.mask_map == pytest.approx(51 / 101)  # recall 0.5
    assert score([a, np.zeros((h, w), np.uint8)]).mask_map == pytest.approx(51 / 101)
    with pytest.raises(ValueError, match="one mask per detection"):
        DetectionMetrics(["a"]).update(gt_boxes[:2], [0, 0], [0.9, 0.8], gt_boxes, gt_ids, masks=[a], gt_masks=[a])


def test_pasting_and_the_best_hundred_per_class():
    pasted = paste_masks(np.ones((1, 28, 28)), np.array([[10, 20, 39, 49]]), (60, 80))
    np.testing.assert_array_equal(pasted[0], _rect_mask(80, 60, 10, 20, 39, 49))  # GluonCV's fill: the box's pixels
    n = 130
    ids, scores = np.zeros(n, np.int64), np.linspace(0.1, 0.9, n)
    ids[:5] = 1
    boxes = np.tile(np.array([[1, 1, 10, 10]], np.float32), (n, 1))
    rles = mask_rles(np.ones((n, 28, 28), np.float32), boxes, ids, scores, (20, 20))
    kept = [i for i, r in enumerate(rles) if r is not None]
    assert kept == list(range(5)) + list(range(n - 100, n))  # class 1's five, class 0's best 100


def test_eval_detection_reports_mask_ap_of_a_mask_rcnn_and_a_note_without_masks(tmp_path, capsys):
    import resnest_gluon as rg
    from demos.scenes import make_scenes
    from recordio_tools.detection import pack_detection

    make_scenes(str(tmp_path / "voc"), train=1, val=3, size=96, seed=5, masks=True)
    for name, masks in (("val", True), ("plain", False)):
        pack_detection(str(tmp_path / "voc"), str(tmp_path / name), "voc", split="val",
                       classes_file=str(tmp_path / "voc" / "classes.txt"), progress=False, masks=masks)
    names = open(tmp_path / "voc" / "classes.txt").read().split()
    mx.random.seed(0)
    net = rg.get_model("mask_rcnn_fpn_resnest14", classes=names, rpn_test_post_nms=30, rcnn_max_dets=30,
                       num_fcn_convs=1, mask_channels=16)
    params = str(tmp_path / "mask.params")
    rg.save_trained(net, params)
    script = load_script("eval_detection")
    summary = script.run(["--rec-val", str(tmp_path / "val.rec"), "--params", params, "--short", "96", "--max-size",
                          "96", "-j", "0", "--out", str(tmp_path / "eval")])
    out = capsys.readouterr().out
    assert summary["images"] == 3 and 0 <= summary["mask_map"] <= 1 and summary["mask_note"] is None
    assert "COCO mask AP@[.5:.95]" in out and "mask AP" in out.splitlines()[-len(names) - 1]
    assert all("mask_ap" in c for c in summary["per_class"])
    assert os.path.exists(tmp_path / "eval" / "detection_eval.json")
    plain = script.run(["--rec-val", str(tmp_path / "plain.rec"), "--params", params, "--short", "96",
                        "--max-size", "96", "-j", "0", "--out", str(tmp_path / "eval2")])
    assert plain["mask_map"] is None and plain["coco_map"] == summary["coco_map"]  # the same boxes
    assert "--masks" in plain["mask_note"] and "--masks" in capsys.readouterr().out
