"""A full disk while writing a checkpoint or a .rec: the previous file stays, the error names the path and the space."""
import errno
import glob
import os
import subprocess
import sys

import mxnet as mx
import pytest

from resnest_gluon import atomic
from resnest_gluon.atomic import DiskFullError, atomic_write
from resnest_gluon.training.checkpoint import CheckpointManager, latest_checkpoint


def enospc_after(k):
    """A writer that gets ``k`` bytes onto the disk, then fails as a full disk does."""
    def write(path):
        with open(path, "wb") as f:
            f.write(b"\0" * k)
            f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write


def no_temp_files(folder):
    return not [p for p in os.listdir(folder) if p.endswith((".tmp", ".partial"))]


def test_disk_full_mid_write_keeps_the_old_file_and_says_path_and_space(tmp_path):
    path = tmp_path / "weights.params"
    path.write_bytes(b"old and good")
    with pytest.raises(DiskFullError) as err:
        atomic_write(path, enospc_after(3_000_000))
    assert path.read_bytes() == b"old and good" and no_temp_files(tmp_path)
    e = err.value
    assert isinstance(e, OSError) and e.errno == errno.ENOSPC and e.needed == 3_000_000
    assert str(e).startswith(f"no space left on device writing {path}: needed about 3.0 MB, ")
    assert str(e).endswith(f" MB free on {e.mount}") and os.path.ismount(e.mount)


def test_an_mxnet_writer_error_counts_as_disk_full_only_when_the_disk_is_full(tmp_path, monkeypatch):
    def mxnet_write(path):  # MXNet's C++ writers raise MXNetError without errno
        open(path, "wb").write(b"\0" * 1000)
        raise mx.base.MXNetError("FileStream.Write incomplete")
    with pytest.raises(mx.base.MXNetError):  # plenty of space: some other failure, passed on as it is
        atomic_write(tmp_path / "a.params", mxnet_write)
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 0)
    with pytest.raises(DiskFullError, match="writing .*a.params: needed about 0.0 MB, 0.0 MB free"):
        atomic_write(tmp_path / "a.params", mxnet_write)
    assert not os.path.exists(tmp_path / "a.params") and no_temp_files(tmp_path)


def test_a_write_that_leaves_the_disk_full_is_refused(tmp_path, monkeypatch):
    # measured on a full tmpfs: MXNet's save drops its last buffered bytes without an error when the disk fills
    path = tmp_path / "w.params"
    path.write_bytes(b"old")
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 4096)
    with pytest.raises(DiskFullError, match="4096|0.0 MB free"):
        atomic_write(path, lambda tmp: mx.nd.save(tmp, {"w": mx.nd.ones((1000,))}))
    assert path.read_bytes() == b"old" and no_temp_files(tmp_path)


class _Net:
    def save_parameters(self, path):
        mx.nd.save(path, {"w": mx.nd.ones((10,))})


class _Trainer:
    def __init__(self, write=None):
        self.write = write

    def save_states(self, path):
        (self.write or (lambda p: open(p, "wb").write(b"states")))(path)


def test_a_failed_checkpoint_save_leaves_the_previous_one_the_latest(tmp_path):
    saver = CheckpointManager(str(tmp_path), keep=1)
    saver.save(1, _Net(), _Trainer(), note="good")
    with pytest.raises(DiskFullError, match="ckpt-0002.states: needed about 0.5 MB"):
        saver.save(2, _Net(), _Trainer(enospc_after(500_000)))
    latest = latest_checkpoint(str(tmp_path))
    assert latest["epoch"] == 1 and latest["note"] == "good"
    assert sorted(os.listdir(tmp_path)) == ["ckpt-0001.json", "ckpt-0001.params", "ckpt-0001.states"]


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MB filesystem (tmpfs; needs root, skipped elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_disk_keeps_the_old_params(small_disk):
    path = small_disk / "w.params"
    atomic_write(path, lambda tmp: mx.nd.save(tmp, {"w": mx.nd.ones((100_000,))}))  # 0.4 MB
    with pytest.raises(DiskFullError) as err:
        atomic_write(path, lambda tmp: mx.nd.save(tmp, {"w": mx.nd.ones((1_000_000,))}))  # 4 MB
    assert f"writing {path}: needed about" in str(err.value) and err.value.mount == str(small_disk)
    assert mx.nd.load(str(path))["w"].shape == (100_000,) and no_temp_files(small_disk)


def test_training_stops_with_exit_4_and_keeps_the_last_checkpoint_when_the_disk_fills(tmp_path, monkeypatch,
                                                                                       capsys):
    sys.path.insert(0, os.path.dirname(__file__))
    import recgen
    from test_training import train_script
    from resnest_gluon.training import checkpoint

    rec, _, _ = recgen.make_rec(str(tmp_path / "train"), 16, img_fmt=".jpg")
    real_write = checkpoint.atomic_write

    def filling_disk(path, write):  # the second checkpoint's .states hits a full disk after 200 kB
        real_write(path, enospc_after(200_000) if path.endswith("ckpt-0002.states") else write)
    monkeypatch.setattr(checkpoint, "atomic_write", filling_disk)
    save_dir = tmp_path / "run"
    code = train_script.main(["--rec-train", rec, "--model", "resnest14", "--input-size", "32", "--batch-size", "8",
                              "--num-classes", "16", "--no-cuda", "--no-auto-aug", "-j", "1", "--num-epochs", "3",
                              "--save-frequency", "1", "--max-steps-per-epoch", "1", "--warmup-epochs", "0",
                              "--save-dir", str(save_dir)])
    err = capsys.readouterr().err
    assert code == 4, err[-3000:]
    assert f"no space left on device writing {save_dir}/ckpt-0002.states: needed about 0.2 MB" in err
    assert "(after epoch 2); stopping, the last complete checkpoint" in err
    assert latest_checkpoint(str(save_dir))["epoch"] == 1
    assert not glob.glob(str(save_dir / "ckpt-0002.*")) and not glob.glob(str(save_dir / ".*.tmp"))
