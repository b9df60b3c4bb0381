"""Which GPU a benchmark ran on, and its dense bf16 tensor-core peak (for achieved-FLOP fractions / MFU).

Peaks are NVIDIA's datasheet bf16 tensor-core figures, which are quoted with 2:4 sparsity, halved to dense:
H100 SXM5 1,979 -> 989, H100 PCIe 1,513 -> 756, H100 NVL 1,671 -> 835 (H100 datasheet); H200 SXM 1,979 -> 989,
H200 NVL 1,671 -> 835 (H200 datasheet; the H200 is the H100's GH100 compute with HBM3e memory).
A part not listed gets no peak (null) unless `--peak-tflops` names one.
"""

from __future__ import annotations

import shutil
import subprocess

import torch

# Matched in order against the name the driver reports, lower-cased (torch.cuda.get_device_name / nvidia-smi):
# "NVIDIA H200" is the SXM part, "NVIDIA H200 NVL" the PCIe card; "NVIDIA H100 80GB HBM3" the SXM5 part.
DENSE_BF16_TFLOPS = [
    ("h200 nvl", "H200 NVL", 835.0),
    ("h200", "H200 SXM", 989.0),
    ("h100 nvl", "H100 NVL", 835.0),
    ("h100 pcie", "H100 PCIe", 756.0),
    ("h100", "H100 SXM5", 989.0),
    ("a100", "A100", 312.0),
]


def peak_for(name: str) -> tuple[str | None, float | None]:
    """(part, dense bf16 TFLOP/s) for a reported device name, or (None, None) when unknown."""
    lowered = name.lower()
    for key, part, tflops in DENSE_BF16_TFLOPS:
        if key in lowered:
            return part, tflops
    return None, None


def nvidia_smi() -> list[dict]:
    """Each GPU as nvidia-smi reports it (name, memory, power limit, driver), or [] without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return []
    fields = "name,memory.total,power.limit,driver_version,pci.device_id"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [dict(zip(fields.split(","), (v.strip() for v in line.split(",")))) for line in out.splitlines() if line]


def device_report(device: torch.device, peak_override: float | None = None) -> dict:
    """What the JSON records about the machine: names from torch and nvidia-smi, memory, the part matched and
    the peak used (and whether it was given on the command line)."""
    report: dict = {"device": str(device), "torch": torch.__version__}
    if device.type != "cuda":
        report.update(name="cpu", part=None, peak_bf16_tflops=peak_override, peak_source="--peak-tflops"
                      if peak_override else None)
        return report
    props = torch.cuda.get_device_properties(device)
    name = torch.cuda.get_device_name(device)
    part, peak = peak_for(name)
    report.update(name=name, memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                  capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda, nvidia_smi=nvidia_smi(),
                  device_count=torch.cuda.device_count(), part=part,
                  peak_bf16_tflops=peak_override or peak,
                  peak_source="--peak-tflops" if peak_override else ("datasheet (dense bf16)" if peak else None))
    return report
