"""Benchmarks of resnest-gluon, each a module of this package run from the repository root:

    python -m benchmarks.latency        the paper's speed table (optionally beside GluonCV and timm)
    python -m benchmarks.compare        ours (MXNet, ONNX Runtime, OpenVINO) vs GluonCV vs timm, goals checked
    python -m benchmarks.op_profile     time per operator of one model, case and batch size
    python -m benchmarks.dense_speed    our Faster R-CNN / DeepLabV3 vs GluonCV's, with the same weights
    python -m benchmarks.segmentation_train_speed  our DeepLabV3 training step vs GluonCV's train.py loop
    python -m benchmarks.agreement      top-1 of the low-precision paths against float32 on a validation .rec
    python -m benchmarks.data_throughput  training-input images/s: our pipelines vs the official script's
    python -m benchmarks.small_sets     writes the generated small image sets
    python -m benchmarks.small_data     ``--recipe small`` on each small set (README's small-data command)

``python benchmarks/latency.py`` (any of them, as a file, from any folder) runs the same module: the file
re-executes itself as ``python -m benchmarks.<name>`` (``_launch``). ``--help`` of each says what it measures and
writes. The modules starting with ``_`` are shared helpers; the entry modules import no framework before they have
fixed the thread count.
"""
