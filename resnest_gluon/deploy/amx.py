"""Intel AMX for MXNet's oneDNN: the bfloat16 and int8 convolutions run 3-4x faster with it than with AVX-512.

MXNet 1.9.1 ships oneDNN 2.4.4, which has AMX kernels but uses them only when ``DNNL_MAX_CPU_ISA`` allows it, and it
never asks Linux (>= 5.16) for the AMX register state: with the variable set and no permission, the first AMX
instruction kills the process (SIGILL). :func:`enable_amx` asks for the permission (``arch_prctl``), then lets oneDNN
pick AMX. oneDNN reads its ISA limit once, at its first primitive, so this only works before the process has run any
oneDNN operator; afterwards nothing changes and bfloat16 / int8 run on AVX-512.
"""
import ctypes
import os
import platform

__all__ = ["amx_enabled", "amx_supported", "enable_amx"]

_SYS_ARCH_PRCTL = 158          # x86-64 syscall number
_ARCH_REQ_XCOMP_PERM = 0x1023  # asm/prctl.h
_XFEATURE_XTILEDATA = 18       # the AMX tile data register state
_ISA_VARIABLES = ("DNNL_MAX_CPU_ISA", "MKLDNN_MAX_CPU_ISA")
_state = {"enabled": None}


def cpu_flags():
    """The CPU's feature flags (``/proc/cpuinfo``; empty off Linux x86-64)."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return set()


def amx_supported():
    """Whether the CPU reports AMX tiles with bfloat16 and int8 (``/proc/cpuinfo``; Linux x86-64 only)."""
    return {"amx_tile", "amx_bf16", "amx_int8"} <= cpu_flags()


def bfloat16_supported():
    """Whether MXNet 1.9.1's oneDNN (2.4) has bfloat16 convolutions for this CPU: they need AVX-512 (avx512_core);
    on an AVX2-only CPU (e.g. many AMD EPYC) oneDNN cannot create them at all."""
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= cpu_flags()


def _request_tile_permission():
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0


def enable_amx():
    """Lets this process's oneDNN use AMX; returns whether it was enabled (once per process, then cached).

    A ``DNNL_MAX_CPU_ISA`` / ``MKLDNN_MAX_CPU_ISA`` set by the user is kept as it is (the permission is still asked
    for, so that a setting that allows AMX no longer crashes). Otherwise the variable is set only while a tiny
    convolution makes oneDNN read it, then removed, so that programs started from this one (which lack the
    permission) do not inherit it.
    """
    if _state["enabled"] is not None:
        return _state["enabled"]
    if not amx_supported() or not _request_tile_permission():
        _state["enabled"] = False
        return False
    if any(v in os.environ for v in _ISA_VARIABLES):
        _state["enabled"] = True
        return True
    import mxnet as mx

    os.environ["DNNL_MAX_CPU_ISA"] = "AVX512_CORE_AMX"
    try:
        x = mx.nd.ones((1, 1, 3, 3), ctx=mx.cpu())
        mx.nd.Convolution(x, mx.nd.ones((1, 1, 1, 1)), kernel=(1, 1), num_filter=1, no_bias=True).wait_to_read()
    finally:
        del os.environ["DNNL_MAX_CPU_ISA"]
    _state["enabled"] = True
    return True


def amx_enabled():
    """Whether :func:`enable_amx` has let this process's oneDNN use AMX."""
    return bool(_state["enabled"])
