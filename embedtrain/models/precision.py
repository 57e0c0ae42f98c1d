"""Which floating-point precision a device computes fastest in, and an autocast context for it.

Training and encoding run in bf16 *autocast* (matrix products in bfloat16, norms, softmax and the loss in
float32, weights kept in float32) where the hardware has native bfloat16 arithmetic, and in float32
elsewhere:

* CUDA: devices that compute bf16 natively (``torch.cuda.is_bf16_supported(including_emulation=False)``,
  Ampere and newer); older GPUs stay in float32 (fp16 needs loss scaling and is never chosen silently).
* CPU: x86 cores with AVX512-BF16 or AMX tiles (``torch.cpu._is_avx512_bf16_supported`` /
  ``_is_amx_tile_supported``: Cooper Lake, Sapphire Rapids and newer Xeons, AMD Zen 4 and newer) and ARM
  cores that advertise ``bf16`` in ``/proc/cpuinfo`` (Graviton 3, Neoverse V1/N2). On CPUs without them
  oneDNN emulates bf16, which is no faster than float32, so float32 is kept.

:func:`choose_precision` is the one decision: an explicit request (``bf16``, ``fp32``) wins, ``auto`` asks
the hardware. The result carries the reason, so logs and ``embedtrain validate`` can say why.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: What a recipe or a command line may ask for.
PrecisionRequest = Literal["auto", "bf16", "fp32"]


@dataclass(frozen=True)
class Precision:
    """The precision a run computes in, and why."""

    name: Literal["bf16", "fp32"]
    device_type: str
    reason: str

    @property
    def autocast(self) -> bool:
        return self.name == "bf16"

    def context(self):
        """``torch.autocast`` for bf16, a no-op context for fp32."""
        if not self.autocast:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)


@functools.lru_cache(maxsize=1)
def _cpuinfo_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_bf16(flags: frozenset[str] | None = None, machine: str | None = None) -> tuple[bool, str]:
    """Whether this CPU does bf16 arithmetic natively, and the feature that says so.

    ``flags``/``machine`` replace the probed values (tests); with them given, torch is not asked.
    """
    machine = (machine or platform.machine()).lower()
    probing = flags is None
    flags = _cpuinfo_flags() if flags is None else flags
    if machine in ("x86_64", "amd64", "i686", "x86"):
        if probing:
            import torch

            cpu = getattr(torch, "cpu", None)
            for name, label in (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX512-BF16")):
                probe = getattr(cpu, name, None)
                if probe is not None:
                    try:
                        if probe():
                            return True, label
                    except Exception:  # noqa: BLE001 - an old torch without the probe: fall back to the flags
                        pass
        if "amx_bf16" in flags:
            return True, "AMX"
        if "avx512_bf16" in flags:
            return True, "AVX512-BF16"
        return False, "no AVX512-BF16/AMX (bf16 would be emulated)"
    if machine in ("aarch64", "arm64"):
        if "bf16" in flags:
            return True, "ARM BF16"
        return False, "no ARM BF16 instructions"
    return False, f"unknown CPU architecture {machine!r}"


def device_type_of(device: str | None) -> str:
    """``cuda`` / ``cpu`` / ``xpu`` / ``mps`` for a device string (None: where training would run)."""
    if device:
        return device.split(":", 1)[0]
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    return "cpu"


def hardware_bf16(device_type: str) -> tuple[bool, str]:
    """Whether ``device_type`` computes bf16 natively (and fast), with the reason."""
    import torch

    if device_type == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA device"
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no including_emulation parameter
            native = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name()
        return (True, f"{name} has native bf16") if native else (False, f"{name} has no native bf16")
    if device_type == "cpu":
        ok, why = cpu_bf16()
        return ok, (f"CPU has {why}" if ok else f"CPU has {why}")
    if device_type == "xpu":
        return True, "Intel XPU"
    return False, f"bf16 autocast is not used on {device_type}"


def choose_precision(requested: PrecisionRequest = "auto", device: str | None = None) -> Precision:
    """The precision to compute in on ``device``: ``requested`` unless it is ``auto``, else the hardware's."""
    device_type = device_type_of(device)
    if requested == "fp32":
        return Precision("fp32", device_type, "requested")
    if requested == "bf16":
        return Precision("bf16", device_type, "requested")
    ok, why = hardware_bf16(device_type)
    return Precision("bf16" if ok else "fp32", device_type, why)
