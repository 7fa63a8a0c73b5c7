"""The package as a user gets it: the wheel built from this checkout, installed into a clean virtual environment and
used from a folder outside the repository, with no PYTHONPATH.

What it must be: the library alone (``resnest_gluon``, its alias ``resnest``, ``recordio_tools``), no demo code,
benchmarks, scripts or tests, and no repository paths; the C++ sources of the fused operator ship with it and
compile from the installed copy on first import; ``from resnest.gluon import resnest50`` works; and predict.py's
library path (:class:`resnest_gluon.predict.Predictor`) classifies an image with a trained file.

The clean environment is ``python -m venv`` with one ``.pth`` line naming the test interpreter's site-packages:
MXNet, numpy, pip, ... are importable, but the ``.pth`` files *in* that folder are not processed (Python only
processes those of site folders), so the checkout's editable install stays invisible: ``import resnest_gluon`` fails
until the wheel is installed (checked).
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

NOT_SHIPPED = ("demos/", "benchmarks/", "scripts/", "tests/", "tools/", "docs/")
# build products and environments of the checkout: never copied into the build's source tree
IGNORED = shutil.ignore_patterns(".git", ".venv*", "out", "build", "dist", "*.egg-info", "__pycache__",
                                 ".pytest_cache", "*.pyc", "*.so")


def _run(cmd, timeout=300, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def clean_env(**extra):
    """The environment of a user's shell: no PYTHONPATH, no user site, none of the test run's operator settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "RESNEST_GLUON_FUSED_OPS", "RESNEST_GLUON_OPS_CACHE")}
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The wheel of a copy of the checkout (a copy: setuptools builds in the source tree, and a stale ``build/lib``
    would leak files that no longer exist into the wheel), and the source files it should hold."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=IGNORED)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp / "dist"), str(src)])
    (wheel,) = (tmp / "dist").glob("resnest_gluon-*.whl")
    sources = sorted(os.path.relpath(p, src) for p in glob.glob(str(src / "resnest_gluon" / "**" / "csrc" / "*.cc"),
                                                                 recursive=True))
    return wheel, sources


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory):
    """A clean venv with the wheel installed: ``(python, site-packages, a working folder outside the repository)``."""
    wheel, _ = built
    tmp = tmp_path_factory.mktemp("venv")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    deps = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}  # this interpreter's: MXNet, numpy, pip, ...
    with open(os.path.join(site, "dependencies.pth"), "w") as f:
        f.write("\n".join(sorted(deps)) + "\n")
    work = tmp / "work"  # outside the repository: nothing of the checkout on sys.path
    work.mkdir()
    probe = "import importlib.util as u; print([m for m in ('resnest_gluon', 'resnest', 'demos') if u.find_spec(m)])"
    assert _run([python, "-c", probe], cwd=work, env=clean_env()).stdout.strip() == "[]"
    assert _run([python, "-c", "import mxnet, numpy, PIL; print('ok')"], cwd=work, env=clean_env()).stdout.strip() \
        == "ok"
    # --ignore-installed: the test interpreter's own (editable) resnest-gluon is seen, and must be left alone
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
         cwd=work, env=clean_env())
    return python, site, work


def test_the_wheel_is_the_library_with_its_operator_sources_and_data(built):
    wheel, sources = built
    names = zipfile.ZipFile(wheel).namelist()
    top = sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")})
    assert top == ["recordio_tools", "resnest", "resnest_gluon"], top
    assert not [n for n in names if n.startswith(NOT_SHIPPED)]
    assert not [n for n in names if "demo" in n.lower()], "demo code in the wheel"
    assert sources and set(sources) <= set(names), (sources, "C++ sources missing from the wheel")
    for required in ("resnest/__init__.py", "resnest_gluon/__init__.py", "resnest_gluon/predict.py",
                     "resnest_gluon/data/imagenet_classes.txt", "recordio_tools/__main__.py",
                     "recordio_tools/ade20k_classes.txt"):
        assert required in names, required


def test_the_installed_package_compiles_its_operator_builds_models_and_predicts(installed, tmp_path):
    python, site, work = installed
    cache = tmp_path / "ops"  # empty: the operator compiles here, from the installed sources
    code = textwrap.dedent(f"""
        import importlib, importlib.util, json, os, sys
        from PIL import Image

        import resnest_gluon as rg
        from resnest.gluon import resnest50
        import resnest.gluon.zoo
        from resnest_gluon.predict import Predictor, load_class_names
        from resnest_gluon.zoo import DataConfig

        site = {site!r}
        package = os.path.dirname(rg.__file__)
        assert package == os.path.join(site, "resnest_gluon"), package
        assert resnest50 is rg.resnest50 and resnest.gluon.zoo is rg.zoo
        assert importlib.util.find_spec("demos") is None and importlib.util.find_spec("benchmarks") is None
        assert len(load_class_names()) == 1000  # data/imagenet_classes.txt shipped
        import mxnet as mx, numpy as np

        from resnest_gluon.ops import attention_op as op
        assert not op.available()  # not at import: with the first network
        net = rg.get_model("resnest14", classes=3)  # the first network compiles and loads the operator
        assert op.available(), op.unavailable_reason()
        assert op.SOURCE.startswith(package + os.sep), op.SOURCE  # compiled from the wheel's copy
        library = op.library_path()
        assert library.startswith({str(cache)!r}) and os.path.isfile(library), library

        net.initialize(mx.init.Xavier())
        blocks = [b for b in net.layer1 if hasattr(b, "conv2")]
        assert blocks and all(b.conv2.fused_attention for b in blocks)
        net.hybridize()
        assert net(mx.nd.random.uniform(shape=(2, 3, 32, 32))).shape == (2, 3)

        names = ["cat", "dog", "fish"]
        rg.save_trained(net, "r14.params", class_names=names, data_config=DataConfig(input_size=32))
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save("x.jpg")
        predictor = Predictor(params="r14.params")
        top = predictor.predict(["x.jpg"], topk=2)
        assert predictor.names == names and predictor.config.input_size == 32
        assert predictor.probabilities(["x.jpg"]).shape == (1, 3)
        assert len(top) == 1 and len(top[0]) == 2 and all(c in names for c, _ in top[0])
        assert abs(sum(p for _, p in predictor.predict(["x.jpg"], topk=3)[0]) - 1) < 1e-6

        files = [os.path.relpath(os.path.join(d, f), package) for d, _, fs in os.walk(package) for f in fs]
        assert not [f for f in files if "demo" in f.lower()], "demo code installed"
        print(json.dumps({{"library": library, "top": top[0]}}))
    """)
    proc = _run([python, "-c", code], cwd=work, env=clean_env(RESNEST_GLUON_OPS_CACHE=str(cache)))
    assert "compiling the fused split-attention operator" in proc.stderr  # a real build, not a cached one
    assert os.listdir(cache)


def test_the_installed_sources_know_no_repository(installed):
    """No installed module reaches out of the package into a checkout (demos, scripts, out/ folders)."""
    _, site, _ = installed
    for package in ("resnest_gluon", "resnest", "recordio_tools"):
        for path in glob.glob(os.path.join(site, package, "**", "*.py"), recursive=True):
            text = open(path, encoding="utf-8").read()
            for needle in ("import demos", "from demos", "demo_steps", "demo_data", "out/demo"):
                assert needle not in text, (path, needle)
            assert not re.search(r"^REPO\s*=", text, re.M), path  # the root of a checkout
