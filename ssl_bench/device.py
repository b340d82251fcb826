"""Where training runs: device selection and the process-level settings of a CPU run."""

from __future__ import annotations

import os

import torch

from ssl_bench.errors import SSLBenchError

__all__ = [
    "select_device", "reuse_freed_memory", "default_malloc", "trim_heap", "has_bf16", "resolve_precision",
    "autocast",
]


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SSLBenchError(f"recipe key train.device is '{name}' but CUDA is not available on this machine")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SSLBenchError(f"recipe key train.device is '{name}' but this machine has {torch.cuda.device_count()} "
                                "GPU(s)")
        return dev
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise SSLBenchError("recipe key train.device is 'mps' but MPS is not available on this machine")
    return torch.device(name)


def reuse_freed_memory() -> bool:
    """CPU training: serve large allocations from the heap and keep freed ones there for the next step.

    glibc hands every allocation above its mmap threshold (adaptive, at most 32 MiB) to a fresh
    ``mmap`` and unmaps it on free, so each step of a CPU training run page-faults and zeroes its
    largest activations again (64 px, ResNet-18, batch 256: 9 s of system time per minute).  With
    ``M_MMAP_MAX = 0`` and a high ``M_TRIM_THRESHOLD`` every block comes from the heap and a freed
    block is reused by the next step: measured on 2 cores, the BYOL step 8–10 % faster at 64 px
    (system time 9 s → 2.5 s per minute), for a few % more peak RSS; :func:`trim_heap`, once per
    epoch, hands the free heap back.  ``SSL_BENCH_CPU_MALLOC=default`` leaves glibc's defaults.
    Returns whether it was applied (Linux/glibc only).
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("SSL_BENCH_CPU_MALLOC", "heap") == "default":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False


def default_malloc() -> bool:
    """Undo :func:`reuse_freed_memory`: glibc's default mmap threshold and trim threshold (65536 mmap'd
    blocks at most, 128 KiB), for the rest of a process that ran a training run (a notebook's
    ``ssl_bench.run``).  Returns whether it was applied."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        return bool(libc.mallopt(m_mmap_max, 65536)) and bool(libc.mallopt(m_trim_threshold, 128 * 1024))
    except (OSError, AttributeError):
        return False


def trim_heap() -> bool:
    """Give the heap's free memory back to the OS (glibc ``malloc_trim(0)``); call once per epoch.

    glibc serves a CPU training step's large activations from the heap once its adaptive mmap
    threshold has grown, and keeps freed pages for reuse, so the resident size can creep between
    epochs.  Trimming once per epoch bounds that at no measurable cost (a few ms per epoch),
    unlike fixing the mmap threshold (``mallopt(M_MMAP_THRESHOLD, 1 MiB)``), which made every
    large activation a fresh, page-faulted ``mmap`` and cost 35–40 % of CPU training speed
    (BYOL, ResNet-18, 28 px, batch 256: 200 instead of 345 img/s) to save 8 % of peak RSS.
    Returns whether memory was released (False where the C library is not glibc).
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
        return False


def has_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 arithmetic natively: a CUDA GPU that supports bf16, or a CPU with
    AVX512-BF16 or AMX-BF16 instructions (oneDNN's bf16 convolutions; elsewhere bf16 on a CPU is
    emulated and slower than fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16-mixed`` where ``device`` has native bf16 (:func:`has_bf16`), else ``32-true``;
    any other value is returned as it is."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if has_bf16(device) else "32-true"


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved ``precision`` (a no-op for ``32-true``)."""
    import contextlib

    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()
