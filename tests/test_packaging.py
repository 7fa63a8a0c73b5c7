"""The built package (not only the editable checkout): one copy of the code under two names, data files shipped."""
import subprocess
import sys
import zipfile

from conftest import REPO, run_python


def test_wheel_ships_both_import_names_and_the_class_names(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), REPO], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("resnest_gluon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("resnest/__init__.py", "resnest_gluon/__init__.py", "resnest_gluon/data/imagenet_classes.txt",
                     "recordio_tools/__main__.py"):
        assert required in names, required
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    proc = run_python(
        "import resnest_gluon, resnest.gluon.zoo\n"
        "from resnest.gluon import resnest50\n"
        "from resnest_gluon.predict import load_class_names\n"
        "assert resnest50 is resnest_gluon.resnest50 and resnest.gluon.zoo is resnest_gluon.zoo\n"
        "print(resnest_gluon.__file__, len(load_class_names()))",
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    path, count = proc.stdout.split()
    assert path == str(tmp_path / "site" / "resnest_gluon" / "__init__.py") and count == "1000"
