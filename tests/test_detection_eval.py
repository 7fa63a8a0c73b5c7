"""Detection mAP (resnest_gluon.dense.detection_eval and scripts/eval_detection.py).

The metrics on cases small enough to compute by hand, and against GluonCV's VOC metrics fed the same arrays; then a
tiny VOC set packed by ``recordio_tools``: an "oracle" detector that returns the ground truth scores exactly 1.0
through the resize, clip and scale back; a damaged record is skipped and named; a randomly initialised Faster
R-CNN evaluated by the script gives what ``evaluate_detection`` gives, and ``horovodrun -np 2`` the same numbers.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_script
from recgen import break_header, make_image
import resnest_gluon as rg
from recordio_tools import detection, packing
from resnest_gluon.dense import DenseDataConfig
from resnest_gluon.dense.detection_data import DetectionRecordDataset
from resnest_gluon.dense.detection_eval import DetectionMetrics, evaluate_detection
from resnest_gluon.dense.inference import Detector
from resnest_gluon.evaluation import LabelError

HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")
CLASSES = ["cat", "dog"]
SIZE = ["--short", "64", "--max-size", "96"]
DAMAGED = 2  # the record whose header the damaged copy breaks


def metrics_of(classes, images):
    """The result of DetectionMetrics fed ``images``: (detections [(box, class, score)], truth [(box, class,
    difficult)]) per image."""
    metrics = DetectionMetrics(classes)
    for found, truth in images:
        metrics.update([d[0] for d in found], [d[1] for d in found], [d[2] for d in found],
                       [t[0] for t in truth], [t[1] for t in truth], [t[2] for t in truth])
    return metrics.result()


A, B, C = [10, 10, 50, 50], [60, 60, 100, 100], [110, 10, 150, 50]


def test_perfect_detections_score_one_on_every_metric():
    res = metrics_of(["a", "b"], [([(A, 0, 0.9), (B, 1, 0.8)], [(A, 0, 0), (B, 1, 0)]),
                                  ([(C, 1, 0.7)], [(C, 1, 0)])])
    assert res.voc07_map == res.voc_map == 1.0 and res.voc07_ap == res.voc_ap == [1.0, 1.0]
    # pycocotools divides by tp + fp + 2.2e-16: 1 - 2e-16 at best
    assert [res.coco_map, res.coco_map50, res.coco_map75, *res.coco_ap] == [pytest.approx(1.0, abs=1e-12)] * 5
    assert res.num_gt == [1, 2] and res.images == 2 and res.detections == 3


def test_a_false_positive_ranked_first_gives_the_ap_computed_by_hand():
    # Two objects; by score: a false positive, then the first object found exactly, the second never found.
    # Precision/recall down the ranking: (0, 0), (0.5, 0.5). VOC07 (11 points): recall levels 0..0.5 (6 of them)
    # reach precision 0.5, the 5 above none: 6 * 0.5 / 11. Area: recall 0 -> 0.5 at precision 0.5 = 0.25. COCO
    # (101 recall points, every IoU threshold alike as the hit is exact): points 0..0.50 (51) at 0.5.
    res = metrics_of(["a"], [([(C, 0, 0.9), (A, 0, 0.8)], [(A, 0, 0), (B, 0, 0)])])
    assert res.voc07_map == pytest.approx(3 / 11, abs=1e-12)
    assert res.voc_map == pytest.approx(0.25, abs=1e-12)
    assert res.coco_map == pytest.approx(51 * 0.5 / 101, abs=1e-12)
    # ranked after the hit, the same false positive costs VOC07 only the points above recall 0.5
    res = metrics_of(["a"], [([(C, 0, 0.7), (A, 0, 0.8)], [(A, 0, 0), (B, 0, 0)])])
    assert res.voc07_map == pytest.approx(6 / 11, abs=1e-12)


def test_precision_and_recall_at_the_score_threshold_use_the_voc_verdicts():
    # above 0.5: a hit on A, a second detection of A (a duplicate: false positive), one on the difficult C
    # (ignored); below: the hit on B. Objects that count: A and B.
    found = [(A, 0, 0.9), (A, 0, 0.8), (C, 0, 0.7), (B, 0, 0.4)]
    res = metrics_of(["a"], [(found, [(A, 0, 0), (B, 0, 0), (C, 0, 1)])])
    assert (res.score_thresh, res.precision_at_thresh, res.recall_at_thresh) == (0.5, 0.5, 0.5)
    low = DetectionMetrics(["a"], score_thresh=0.3)
    low.update(*zip(*found), [A, B, C], [0, 0, 0], [0, 0, 1])
    assert (low.result().precision_at_thresh, low.result().recall_at_thresh) == (2 / 3, 1.0)
    assert res.to_dict()["recall_at_thresh"] == 0.5


def test_difficult_objects_are_neither_missed_nor_penalise_a_detection():
    # image 1: a detection on the difficult object, ranked first; image 2: the difficult object not found
    res = metrics_of(["a"], [([(B, 0, 0.95), (A, 0, 0.9)], [(A, 0, 0), (B, 0, 1)]),
                             ([(A, 0, 0.8)], [(A, 0, 0), (B, 0, 1)])])
    assert res.num_gt == [2] and res.num_difficult == [2]
    assert res.voc07_map == res.voc_map == 1.0 and res.coco_map == pytest.approx(1.0, abs=1e-12)
    # the same detection on an object that counts is a false positive ranked first
    assert metrics_of(["a"], [([(B, 0, 0.95), (A, 0, 0.9)], [(A, 0, 0)])]).voc07_map < 1


def test_a_class_without_ground_truth_is_reported_and_left_out_of_the_means():
    res = metrics_of(["a", "b", "c"], [([(A, 0, 0.9), (C, 2, 0.8)], [(A, 0, 0)])])  # b: nothing; c: a false alarm
    assert res.classes_without_gt == ["b", "c"]
    assert res.voc07_ap[0] == 1.0 and np.isnan(res.voc07_ap[1:]).all() and np.isnan(res.coco_ap[1:]).all()
    assert res.voc07_map == res.voc_map == 1.0 and res.coco_map == pytest.approx(1.0, abs=1e-12)
    d = res.to_dict()
    assert [c["voc07_ap"] for c in d["per_class"]] == [1.0, None, None] and d["classes_without_gt"] == ["b", "c"]
    json.dumps(d, allow_nan=False)  # valid JSON: no NaN
    only_difficult = metrics_of(["a"], [([(A, 0, 0.9)], [(A, 0, 1)])])
    assert only_difficult.classes_without_gt == ["a"] and only_difficult.voc07_map is not None
    assert np.isnan(only_difficult.voc07_map) and only_difficult.to_dict()["coco_map"] is None


def test_voc_numbers_equal_gluoncvs_metrics_fed_the_same_arrays():
    from gluoncv.utils.metrics.voc_detection import VOC07MApMetric, VOCMApMetric

    rng = np.random.RandomState(0)
    names = ["a", "b", "c", "d"]
    ours = DetectionMetrics(names, metrics=("voc07", "voc"))
    theirs = [VOC07MApMetric(class_names=names), VOCMApMetric(class_names=names)]
    for _ in range(25):
        m = rng.randint(1, 6)
        xy = rng.uniform(0, 150, (m, 2))
        gt = np.concatenate([xy, xy + rng.uniform(8, 60, (m, 2))], axis=1).astype(np.float32)
        gt_ids = rng.randint(0, 3, m).astype(np.float32)  # class d never has an object
        difficult = (rng.uniform(size=m) < 0.2).astype(np.float32)
        jittered = gt + rng.normal(0, 6, gt.shape).astype(np.float32)
        xy = rng.uniform(0, 150, (4, 2))
        strays = np.concatenate([xy, xy + rng.uniform(8, 60, (4, 2))], axis=1).astype(np.float32)
        boxes = np.concatenate([jittered, strays, np.zeros((2, 4), np.float32)])
        ids = np.concatenate([np.where(rng.uniform(size=m) < 0.8, gt_ids, rng.randint(0, 4, m)),
                              rng.randint(0, 4, 4), [-1, -1]]).astype(np.float32)  # padding rows last
        scores = np.round(rng.uniform(size=len(ids)), 1).astype(np.float32)  # rounded: many equal scores
        ours.update(boxes, ids, scores, gt, gt_ids, difficult)
        for metric in theirs:
            metric.update(boxes[None], ids[None], scores[None], gt[None], gt_ids[None], difficult[None])
    res = ours.result()
    for metric, aps, mean in zip(theirs, (res.voc07_ap, res.voc_ap), (res.voc07_map, res.voc_map)):
        _, values = metric.get()
        np.testing.assert_allclose(aps, values[:-1], rtol=0, atol=1e-12)
        assert mean == pytest.approx(values[-1], abs=1e-12) and 0 < mean < 1
    assert np.isnan(res.voc07_ap[3]) and res.coco_ap is None and res.classes_without_gt == ["d"]


# ----------------------------------------------------------------------------- a packed VOC set

# (image id, (width, height), objects as VOC's 1-based (name, xmin, ymin, xmax, ymax, difficult)); several objects
# reach the right or bottom edge
VOC = [("p0", (120, 90), [("cat", 11, 11, 60, 80, 0), ("dog", 61, 21, 120, 90, 0)]),
       ("p1", (100, 100), [("dog", 1, 1, 100, 50, 0), ("cat", 21, 51, 80, 100, 1)]),
       ("p2", (90, 120), [("cat", 1, 31, 90, 120, 0)]),
       ("p3", (128, 96), [("cat", 31, 11, 128, 96, 0)]),
       ("p4", (80, 110), [("dog", 11, 11, 70, 100, 0), ("cat", 41, 61, 80, 110, 1)]),
       ("p5", (110, 70), [("dog", 6, 6, 55, 65, 0), ("dog", 56, 6, 110, 70, 0)])]


def write_voc(root):
    for d in ("Annotations", "JPEGImages"):
        os.makedirs(os.path.join(root, d))
    for i, (image_id, (w, h), objects) in enumerate(VOC):
        Image.fromarray(make_image(i, h, w, seed=5)).save(os.path.join(root, "JPEGImages", image_id + ".jpg"),
                                                          quality=95)
        xml = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                      f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for n, x1, y1, x2, y2, d in objects)
        with open(os.path.join(root, "Annotations", image_id + ".xml"), "w") as f:
            f.write(f"<annotation><filename>{image_id}.jpg</filename><size><width>{w}</width><height>{h}</height>"
                    f"</size>{xml}</annotation>")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The packed set (``voc``), a copy with record 2's header damaged (``damaged``) and a Faster R-CNN FPN on
    resnest14 with random weights for its classes, saved with save_trained (``params``)."""
    d = tmp_path_factory.mktemp("deteval")
    write_voc(str(d / "VOC"))
    prefix = str(d / "voc")
    detection.pack_detection(str(d / "VOC"), prefix, "voc", options=packing.PackOptions(), progress=False)
    assert open(prefix + "_classes.txt").read().split() == CLASSES
    damaged = str(d / "damaged")
    for ext in (".rec", ".idx", "_classes.txt"):
        shutil.copy(prefix + ext, damaged + ext)
    break_header(damaged + ".rec", damaged + ".idx", [DAMAGED])
    mx.random.seed(0)
    net = rg.get_model("faster_rcnn_fpn_resnest14", classes=CLASSES, rpn_test_post_nms=30)  # 30 proposals: fast
    rg.save_trained(net, str(d / "det.params"))
    return {"dir": d, "voc": prefix, "damaged": damaged, "params": str(d / "det.params")}


class Oracle:
    """A "detector" that knows the answers: the ground truth of the records it is told, in that order, scaled into
    the resized image it is given (so only an exact scale back finds them). Boxes reaching the right or bottom edge
    are pushed 1000 px past it (only the clip to the image brings them back), and a padding row (id -1) follows."""

    def __init__(self, dataset, order):
        self.truth, self.calls = [dataset[i] for i in order], 0

    def __call__(self, x):
        img, objects = self.truth[self.calls]
        self.calls += 1
        (h, w), (new_h, new_w) = img.shape[:2], x.shape[2:]
        boxes = objects[:, :4] * np.array([new_w / w, new_h / h, new_w / w, new_h / h], np.float32)
        boxes[objects[:, 2] >= w - 1, 2] += 1000
        boxes[objects[:, 3] >= h - 1, 3] += 1000
        n = len(objects)
        ids = np.append(objects[:, 4], -1).reshape(1, n + 1, 1)
        scores = np.append(np.linspace(0.9, 0.5, n), -1).reshape(1, n + 1, 1)
        return mx.nd.array(ids), mx.nd.array(scores), mx.nd.array(np.concatenate([boxes, -np.ones((1, 4))])[None])


def test_oracle_detector_scores_one_through_resize_clip_and_scale_back(files):
    dataset = DetectionRecordDataset(files["voc"] + ".rec")
    oracle = Oracle(dataset, range(len(dataset)))
    ev = evaluate_detection(oracle, dataset, data_config=DenseDataConfig(64, 96), class_names=CLASSES,
                            progress=False)
    res = ev.result
    assert oracle.calls == len(dataset) == res.images == 6 and ev.skipped == []
    assert res.num_gt == [3, 5] and res.num_difficult == [2, 0] and res.detections == 10
    assert res.voc07_ap == res.voc_ap == [1.0, 1.0] and res.voc07_map == res.voc_map == 1.0
    assert [res.coco_map, *res.coco_ap] == [pytest.approx(1.0, abs=1e-12)] * 3
    assert res.coco_map_small is not None and np.isnan(res.coco_map_small)  # no object below 32 x 32 px


def test_damaged_record_is_skipped_and_named_and_the_others_evaluated(files):
    dataset = DetectionRecordDataset(files["damaged"] + ".rec")
    readable = [i for i in range(len(dataset)) if i != DAMAGED]
    ev = evaluate_detection(Oracle(dataset, readable), dataset, data_config=DenseDataConfig(64, 96),
                            class_names=CLASSES, progress=False, num_workers=1)
    (index, message), = ev.skipped
    assert index == DAMAGED and f"damaged.rec record #{DAMAGED}" in message and "damaged header" in message
    assert ev.result.images == 5 and ev.result.voc07_map == 1.0 and ev.result.coco_map == pytest.approx(1, abs=1e-12)


def test_a_class_the_model_lacks_is_an_error_naming_the_record(files, capsys):
    dataset = DetectionRecordDataset(files["voc"] + ".rec")
    with pytest.raises(LabelError,
                       match=r"voc.rec record #0 \(key 0, offset 0\): class id 1 is not one of the model's 1"):
        evaluate_detection(Oracle(dataset, [0]), dataset, data_config=DenseDataConfig(64, 96), class_names=["cat"],
                           progress=False)
    swapped = str(files["dir"] / "swapped")  # the same records, their classes file in another order
    for ext in (".rec", ".idx"):
        shutil.copy(files["voc"] + ext, swapped + ext)
    with open(swapped + "_classes.txt", "w") as f:
        f.write("dog\ncat\n")
    capsys.readouterr()
    assert load_script("eval_detection").main(["--rec-val", swapped + ".rec", "--params", files["params"]]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert re.match(r"error: .*swapped_classes.txt names the classes of .* \['dog', 'cat'\], the model's are "
                    r"\['cat', 'dog'\]", line)


@pytest.fixture(scope="module")
def single(files):
    """scripts/eval_detection.py in this process on the damaged copy (1 decoding worker): its JSON."""
    out = files["dir"] / "single.json"
    load_script("eval_detection").run(["--rec-val", files["damaged"] + ".rec", "--params", files["params"], *SIZE,
                                       "-j", "1", "--json", str(out)])
    return json.loads(out.read_text())


def test_script_reports_what_evaluate_detection_finds_and_leaves_the_net_as_it_was(files, single, capsys):
    detector = Detector(files["params"], short=64, max_size=96)
    before = {k: p.data().asnumpy() for k, p in detector.net.collect_params().items()}
    ev = evaluate_detection(detector.net, DetectionRecordDataset(files["damaged"] + ".rec"), progress=False)
    assert all(np.array_equal(before[k], p.data().asnumpy()) for k, p in detector.net.collect_params().items())
    direct = ev.result.to_dict()
    assert {k: single[k] for k in direct} == direct  # every number, per class too
    assert 0 <= single["voc07_map"] <= 1 and 0 <= single["coco_map"] <= 1 and single["detections"] > 0
    assert single["images"] == 5 and [s["index"] for s in single["skipped_records"]] == [DAMAGED]
    assert single["class_names"] == CLASSES and single["data_config"]["short"] == 64
    assert [c["num_gt"] for c in single["per_class"]] == [2, 5]  # the damaged record held a cat
    assert single["images_per_sec"] > 0 and single["world_size"] == 1


@pytest.mark.skipif(not os.path.exists(HOROVODRUN), reason="needs horovodrun next to the interpreter")
def test_horovod_two_ranks_give_the_single_process_numbers(files, single):
    out = files["dir"] / "hvd.json"
    # this checkout's code in the ranks (the interpreter may have another checkout installed); a thread per rank
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([HOROVODRUN, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable,
                           os.path.join(REPO, "scripts", "eval_detection.py"), "--rec-val", files["damaged"] + ".rec",
                           "--params", files["params"], *SIZE, "-j", "0", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["world_size"] == 2 and proc.stdout.count("VOC07 mAP") == 1  # only rank 0 prints
    for key in ("images", "detections", "voc07_map", "voc_map", "coco_map", "coco_map50", "per_class",
                "skipped_records"):
        assert res[key] == single[key], key
