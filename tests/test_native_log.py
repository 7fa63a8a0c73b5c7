"""resnest_gluon.native_log: MXNet's known harmless C++ log lines are dropped, everything else gets through."""
import subprocess
import sys
import textwrap

# Average pooling in training mode: MXNet 1.9.1's oneDNN pooling logs its forward_scoring notice.
POOL_STEP = textwrap.dedent("""
    import sys
    import mxnet as mx
    from mxnet import autograd
    if sys.argv[1] == "filtered":
        from resnest_gluon.native_log import filter_native_stderr
        filter_native_stderr()
    pool = mx.gluon.nn.AvgPool2D(2, 2, ceil_mode=True, count_include_pad=False)
    x = mx.nd.ones((2, 16, 8, 8))
    x.attach_grad()
    with autograd.record():
        y = pool(x)
    y.backward()
    mx.nd.waitall()
    sys.stderr.write("\\rprogress 1\\rprogress 2\\n")
    print("a real warning", file=sys.stderr)
    sys.stderr.flush()
    if sys.argv[2] == "crash":
        import os
        os.abort()
""")


def run(mode, end="exit"):
    """The step in a fresh process; stderr as bytes decoded by hand (text mode would turn \\r into \\n)."""
    proc = subprocess.run([sys.executable, "-c", POOL_STEP, mode, end], capture_output=True, timeout=120)
    proc.stderr = proc.stderr.decode()
    return proc


def test_the_pooling_notice_is_dropped_and_other_stderr_kept():
    raw, filtered = run("raw"), run("filtered")
    assert "MKLDNN Pooling: training with prop_kind is forward_scoring" in raw.stderr  # what MXNet writes
    assert "MKLDNN Pooling" not in filtered.stderr
    assert "\rprogress 1\rprogress 2\n" in filtered.stderr and "a real warning" in filtered.stderr
    assert filtered.returncode == 0


def test_a_crashing_process_still_gets_its_last_words_out():
    crashed = run("filtered", "crash")
    assert crashed.returncode != 0
    assert "a real warning" in crashed.stderr and "MKLDNN Pooling" not in crashed.stderr
