#!/usr/bin/env python3
"""Print the CMAKE_ARGS that build llama.cpp (inside llama-cpp-python) for the CPU of this machine.

    CMAKE_ARGS="$(python3 scripts/llama_cmake_args.py)" pip install -e ".[llamacpp]"

On Linux x86_64: ``-DGGML_NATIVE=OFF`` and each instruction set ON only where
/proc/cpuinfo lists it, OFF otherwise (with GGML_NATIVE=OFF llama.cpp turns
AVX, AVX2, FMA, F16C, BMI2 and SSE4.2 ON by default, which would build a
library that dies with an illegal instruction on a CPU without them). Not
``-march=native``: the native build also enables AMX where the CPU lists it,
and crashes where a VM does not let processes use the AMX units; AMX stays OFF.
Elsewhere (macOS, aarch64, no /proc/cpuinfo): nothing, so llama.cpp's own
defaults apply (a native build).

llama.cpp can also build every CPU variant and pick one at run time
(GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS), but llama-cpp-python does not load
such backends (abetlen/llama-cpp-python#2069: "no backends are loaded").

Usage: llama_cmake_args.py [CPUINFO_FILE [MACHINE]] (defaults: /proc/cpuinfo, this machine).
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

# GGML option -> the /proc/cpuinfo flags it needs (all of them).
OPTIONS = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    "GGML_AVX2": ("avx2",),
    "GGML_BMI2": ("bmi2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    # llama.cpp's AVX512 means -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
}
AVX512_EXTRAS = {  # each also needs GGML_AVX512
    "GGML_AVX512_VBMI": ("avx512vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}
ALWAYS_OFF = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
X86 = ("x86_64", "amd64", "i386", "i686")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The flags of the first processor in a /proc/cpuinfo text (x86 lists them on a ``flags`` line)."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return set(value.split())
    return set()


def cmake_args(cpuinfo: str, machine: str) -> str:
    """The CMAKE_ARGS for a CPU with this /proc/cpuinfo on ``machine`` (``platform.machine()``); may be empty."""
    flags = cpu_flags(cpuinfo)
    if machine.lower() not in X86 or not flags:
        return ""
    enabled = {option: all(flag in flags for flag in needs) for option, needs in OPTIONS.items()}
    for option, needs in AVX512_EXTRAS.items():
        enabled[option] = enabled["GGML_AVX512"] and all(flag in flags for flag in needs)
    enabled.update(dict.fromkeys(ALWAYS_OFF, False))
    return " ".join(["-DGGML_NATIVE=OFF", *(f"-D{option}={'ON' if on else 'OFF'}" for option, on in enabled.items())])


def main(argv: list[str]) -> int:
    """Print the CMAKE_ARGS for ``argv``'s cpuinfo file and machine (default: this machine's)."""
    path = Path(argv[0] if argv else "/proc/cpuinfo")
    machine = argv[1] if len(argv) > 1 else platform.machine()
    try:
        cpuinfo = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    print(cmake_args(cpuinfo, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
