"""The in-repo environments: built once by tools/setup_env.sh, reused in seconds, Horovod with MXNet and Gloo."""
import os
import subprocess

from conftest import REPO


def test_second_setup_run_reuses_both_environments_in_seconds():
    proc = subprocess.run(["bash", os.path.join(REPO, "tools", "setup_env.sh"), "all"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    # nothing is reinstalled or rebuilt: the recorded inputs match (the second run takes well under a second)
    assert ".venv is up to date" in proc.stderr and ".venv-torch is up to date" in proc.stderr, proc.stderr
    assert "installing" not in proc.stderr and "building" not in proc.stderr


def test_horovod_is_built_with_mxnet_and_gloo():
    out = subprocess.run([os.path.join(REPO, ".venv", "bin", "horovodrun"), "--check-build"], capture_output=True,
                         text=True, timeout=300).stdout
    assert "[X] MXNet" in out and "[X] Gloo" in out, out
