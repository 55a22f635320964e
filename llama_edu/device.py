"""Choosing where tensors live (cuda, then mps, then cpu) and making runs repeatable."""

from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass

import numpy as np
import torch

ENV_VAR = "LLAMA_EDU_DEVICE"


def available_devices() -> list[str]:
    """Return the device names that work on this machine, best first (always ends with 'cpu')."""
    names: list[str] = []
    if torch.cuda.is_available():
        names.append("cuda")
        names.extend(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def get_device(preferred: str | None = None) -> torch.device:
    """Pick a device: `preferred`, else $LLAMA_EDU_DEVICE, else cuda, then mps, then cpu."""
    choice = preferred if preferred is not None else os.environ.get(ENV_VAR)
    working = available_devices()
    if choice is None or choice.strip() == "":
        return torch.device(working[0])
    choice = choice.strip().lower()
    if choice not in working:
        source = "the argument" if preferred is not None else f"${ENV_VAR}"
        raise RuntimeError(
            f"{source} asks for device {choice!r}, which does not work on this machine. "
            f"Devices that work here: {', '.join(working)}. "
            f"Use one of those, or unset {ENV_VAR} to choose automatically."
        )
    return torch.device(choice)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a CPU generator seeded the same way."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class DeviceReport:
    """What the workbook will run on, for the environment check in 00_welcome."""

    python: str
    torch: str
    device: str
    gpu_name: str | None
    gpu_memory_gib: float | None
    cpu_threads: int

    def __str__(self) -> str:
        lines = [
            f"Python      {self.python}",
            f"PyTorch     {self.torch}",
            f"Device      {self.device}",
            f"CPU threads {self.cpu_threads}",
        ]
        if self.gpu_name and self.gpu_memory_gib is not None:
            lines.append(f"GPU         {self.gpu_name} ({self.gpu_memory_gib:.1f} GiB)")
        elif self.gpu_name:
            lines.append(f"GPU         {self.gpu_name}")
        else:
            lines.append("GPU         none (everything runs on the CPU, just slower)")
        return "\n".join(lines)


def describe(device: torch.device | None = None) -> DeviceReport:
    """Describe the Python, PyTorch and device this session will use."""
    device = device if device is not None else get_device()
    gpu_name = gpu_mem = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu_name, gpu_mem = props.name, props.total_memory / 2**30
    elif device.type == "mps":
        gpu_name = "Apple GPU (Metal)"
    return DeviceReport(
        python=platform.python_version(),
        torch=torch.__version__,
        device=str(device),
        gpu_name=gpu_name,
        gpu_memory_gib=gpu_mem,
        cpu_threads=torch.get_num_threads(),
    )
