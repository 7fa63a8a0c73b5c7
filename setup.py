"""resnest-gluon: ResNeSt (Split-Attention Networks) for MXNet Gluon.

One source folder, ``resnest_gluon/``, importable as ``resnest_gluon`` and as ``resnest.gluon``
(the ``resnest`` package is a thin alias that maps ``resnest.gluon[.x]`` onto ``resnest_gluon[.x]``), and
``recordio_tools``. The checkout's other folders (``demos/``, ``benchmarks/``, ``scripts/``, ``tests/``) are not in
the wheel: ``tests/test_wheel.py`` builds it, installs it into a clean environment and uses it from there.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "mxnet>=1.9.1,<2",  # or mxnet-cu112==1.9.1 on GPU machines (install it first, then this package with --no-deps)
    "numpy>=1.20,<1.24",  # MXNet 1.9.1 fails to import with numpy>=1.24
    "Pillow",
    "opencv-python",  # or opencv-python-headless; decoding and packing images (recordio_tools, mx.recordio)
    "tqdm",
    "requests",
]

LIBRARY = ["resnest_gluon", "recordio_tools"]
PACKAGES = find_packages(include=[p for name in LIBRARY for p in (name, name + ".*")]) + ["resnest"]
# Data files by package: the class names, and the C++ sources of the operators, compiled on first use from the
# installed package (any ``csrc/`` folder of any subpackage, wherever the operators live).
PACKAGE_DATA = {pkg: ["csrc/*.cc", "csrc/*.h"] for pkg in PACKAGES if pkg != "resnest"}
PACKAGE_DATA["resnest_gluon"] += ["data/*.txt"]
PACKAGE_DATA["recordio_tools"] += ["*.txt"]  # ade20k_classes.txt (pack-segmentation)

setup(
    name="resnest-gluon",
    version="0.1.0",
    description="ResNeSt split-attention networks for MXNet Gluon: models, RecordIO pipeline, Horovod training",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.8",
    packages=PACKAGES,
    package_dir={"resnest": "resnest_gluon/_alias"},
    package_data=PACKAGE_DATA,
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "torch": ["torch>=2.0", "timm>=1.0"],  # convert PyTorch / timm weights
        "horovod": ["horovod==0.28.1"],  # build with HOROVOD_WITH_MXNET=1, see README
        "coco": ["pycocotools"],  # COCO mAP (resnest_gluon.dense.detection_eval)
        "deploy": ["onnx==1.17.0", "onnxruntime", "openvino"],  # export_onnx and the engine backends
        "test": ["pytest", "gluoncv==0.10.5.post0", "pycocotools"],
    },
)
