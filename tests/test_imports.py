"""The import structure: imports run one way (the layers of pyproject.toml's import-linter contract), and importing
the package or the packing tools loads nothing heavy."""
import os
import subprocess
import sys

from conftest import REPO, run_python

VENV_BIN = os.path.dirname(sys.executable)


def test_the_import_contract_holds():
    """lint-imports reads [tool.importlinter] in pyproject.toml: a cycle or an upward import fails here."""
    done = subprocess.run([os.path.join(VENV_BIN, "lint-imports"), "--no-cache"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_importing_the_package_loads_no_mxnet_and_no_operator():
    proc = run_python("import sys, resnest_gluon, resnest.gluon, resnest_gluon.atomic, resnest_gluon.data\n"
                      "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mxnet', 'gluoncv')))\n"
                      "from resnest_gluon.ops import attention_op\n"
                      "print(attention_op.available())\n", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[]", "False"]


def test_the_first_network_loads_the_operator_and_names_resolve_lazily():
    proc = run_python("import resnest_gluon as rg\n"
                      "from resnest_gluon.ops import attention_op\n"
                      "net = rg.resnest14()\n"
                      "print(attention_op.available(), net.layer1[0].conv2.fused_attention)\n"
                      "print(len(rg.list_models()), len(rg.list_models(task=None)), 'resnest50' in rg.__all__)\n"
                      "print(rg.get_model('deeplab_resnest14', classes=3).model_name)\n", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["True True", "21 84 True", "deeplab_resnest14"]


def test_the_packing_tools_help_imports_no_mxnet():
    proc = run_python("import runpy, sys\n"
                      "sys.argv = ['recordio_tools', '--help']\n"
                      "try:\n"
                      "    runpy.run_module('recordio_tools', run_name='__main__')\n"
                      "except SystemExit as e:\n"
                      "    assert e.code == 0, e.code\n"
                      "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'mxnet', 'gluoncv'}))\n",
                      cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout
