"""The paper's speed table: the models, their input sizes and the published single-GPU throughput to compare with.

The numbers are the Gluon measurements behind the ResNeSt paper's speed comparison (the authors listed them in
zhanghang1989/ResNeSt issue #112): one V100, GluonCV models, "tested using Gluon implementation with RecordIO data"
(official README), i.e. ``scripts/gluon/verify.py``: hybridized, 32 images per GPU, first 5 batches not timed.
Their baseline is GluonCV's ``resnet50_v1b`` (stride on the 3x3 conv); ours is MXNet's own ``resnet50_v1`` (stride on
the first 1x1 conv, slightly fewer FLOPs), so the baseline ratio is indicative only.
"""

REFERENCE = "resnest50@224"  # ratios are taken relative to this row, in our run and in the paper

# label -> published img/s on one V100 (the dtype is not stated)
GPU_IMG_PER_S = {
    "resnet50@224": 725.45,
    "resnest50@224": 488.17,
    "resnest50@256": 404.84,
    "resnest101@256": 265.30,
    "resnest200@320": 102.93,
    "resnest269@400": 54.62,
}
TABLE = list(GPU_IMG_PER_S)  # the default --models, in the paper's order

GPU_BATCH_SIZE = 32  # verify.py's default per-device batch, which produced the numbers above
WARMUP_BATCHES = 5   # verify.py restarts its clock after the 5th batch
BASELINE = "resnet50"  # MXNet model zoo resnet50_v1, the only non-ResNeSt row
