"""Facts about the machine, recorded with training epochs and latency measurements."""
from __future__ import annotations

import functools
import os
import platform
import socket

import psutil


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def training_threads(workers: int) -> int:
    """Torch threads for a trial's training when none are asked for: ``OMP_NUM_THREADS`` where the user
    set it (as torch itself honours it: a shared machine's share), else the cores left after one per
    DataLoader worker, at least one. Torch's own default (every core) makes the trial's threads fight
    its workers for the cores: on a busy 2-core machine two threads ran ~10x slower per batch than one."""
    return threads_asked() or max(1, cpu_count() - max(0, workers))


def threads_asked() -> int | None:
    """``OMP_NUM_THREADS`` when it is a positive whole number (torch ignores anything else too)."""
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(asked) if asked.isdigit() and int(asked) > 0 else None


def host() -> str:
    return socket.gethostname()


def total_ram_kb() -> int:
    return psutil.virtual_memory().total // 1024


def process_ram_kb() -> int:
    return psutil.Process().memory_info().rss // 1024


GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")
"""The device files a GPU that torch can use shows up as: NVIDIA's driver, AMD's ROCm, WSL's GPU."""


def gpu_device_nodes() -> list[str]:
    """Those of ``GPU_DEVICE_NODES`` this machine has: none means that ``torch.cuda.is_available()`` is False
    (it needs one of them), known without importing torch."""
    return [node for node in GPU_DEVICE_NODES if os.path.exists(node)]


def gpu_name(device) -> str | None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return None
