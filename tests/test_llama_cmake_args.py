"""scripts/llama_cmake_args.py: llama.cpp's compile flags follow the CPU's, and the install commands use it."""

from __future__ import annotations

import importlib.util
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "llama_cmake_args.py"

# /proc/cpuinfo excerpts (the first processor's block, trimmed).
SAPPHIRE_RAPIDS = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 popcnt avx f16c rdrand avx2 bmi1 bmi2 avx512f avx512dq \
avx512ifma avx512cd avx512bw avx512vl avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx_vnni avx512_bf16 \
amx_bf16 amx_tile amx_int8
"""
HASWELL = """\
processor\t: 0
model name\t: Intel(R) Core(TM) i7-4770 CPU @ 3.40GHz
flags\t\t: fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 popcnt avx f16c rdrand bmi1 avx2 bmi2
"""
CORE2 = """\
processor\t: 0
model name\t: Intel(R) Core(TM)2 Duo CPU E8400 @ 3.00GHz
flags\t\t: fpu sse sse2 ssse3 cx16 sse4_1
"""
GRAVITON = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
"""


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("llama_cmake_args", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def options(args: str) -> dict[str, str]:
    return dict(arg.removeprefix("-D").split("=") for arg in args.split())


def test_a_cpu_with_avx512(script):
    got = options(script.cmake_args(SAPPHIRE_RAPIDS, "x86_64"))
    assert got["GGML_NATIVE"] == "OFF"
    for option in ("AVX", "AVX2", "FMA", "F16C", "BMI2", "SSE42", "AVX_VNNI", "AVX512", "AVX512_VBMI"):
        assert got[f"GGML_{option}"] == "ON", option
    assert got["GGML_AVX512_VNNI"] == got["GGML_AVX512_BF16"] == "ON"
    assert got["GGML_AMX_TILE"] == got["GGML_AMX_INT8"] == got["GGML_AMX_BF16"] == "OFF"  # never: VMs crash on it


def test_a_cpu_with_avx2_only(script):
    got = options(script.cmake_args(HASWELL, "x86_64"))
    assert all(got[f"GGML_{o}"] == "ON" for o in ("AVX", "AVX2", "FMA", "F16C", "BMI2", "SSE42"))
    assert all(got[o] == "OFF" for o in got if "AVX512" in o or "AMX" in o or o == "GGML_AVX_VNNI")


def test_a_cpu_without_avx(script):
    got = options(script.cmake_args(CORE2, "x86_64"))
    # GGML_NATIVE=OFF alone would leave AVX, AVX2, FMA, F16C, BMI2 and SSE4.2 ON: each must be said OFF.
    assert {o for o, v in got.items() if v == "ON"} == set()
    assert {"GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2", "GGML_SSE42"} <= set(got)


def test_avx512_extras_need_avx512_foundation(script):
    partial = HASWELL.replace("bmi2", "bmi2 avx512f avx512_vnni avx512_bf16")  # no avx512cd/vl/dq/bw
    got = options(script.cmake_args(partial, "x86_64"))
    assert got["GGML_AVX512"] == got["GGML_AVX512_VNNI"] == got["GGML_AVX512_BF16"] == "OFF"


@pytest.mark.parametrize(("cpuinfo", "machine"), [(GRAVITON, "aarch64"), ("", "arm64"), (SAPPHIRE_RAPIDS, "arm64")])
def test_elsewhere_llama_cpp_keeps_its_defaults(script, cpuinfo, machine):
    assert script.cmake_args(cpuinfo, machine) == ""


def test_the_command_reads_a_cpuinfo_file(tmp_path):
    (tmp_path / "cpuinfo").write_text(HASWELL)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "cpuinfo"), "x86_64"], capture_output=True, text=True, check=True
    )
    assert "-DGGML_AVX2=ON" in done.stdout and "-DGGML_AVX512=OFF" in done.stdout
    missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "none")], capture_output=True, text=True)
    assert missing.returncode == 0 and missing.stdout == "\n"


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="no /proc/cpuinfo")
def test_on_this_machine_avx512_follows_the_cpu(script):
    flags = script.cpu_flags(Path("/proc/cpuinfo").read_text())
    got = options(script.cmake_args(Path("/proc/cpuinfo").read_text(), platform.machine()))
    if platform.machine() in ("x86_64", "AMD64"):
        assert got["GGML_AVX512"] == ("ON" if {"avx512f", "avx512bw", "avx512vl"} <= flags else "OFF")
        assert got["GGML_AVX2"] == ("ON" if "avx2" in flags else "OFF")


def test_the_install_commands_use_it():
    readme = (ROOT / "README.md").read_text()
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert 'CMAKE_ARGS="$(python3 scripts/llama_cmake_args.py)" pip install -e ".[llamacpp]"' in readme
    assert 'CMAKE_ARGS="$(python scripts/llama_cmake_args.py)" pip install -q -e ".[all]"' in test_sh
    for text in (readme, test_sh):
        assert "-DGGML_AVX512=ON" not in text  # no hard-coded instruction sets
    assert "--no-cache-dir" not in test_sh and "--force-reinstall" not in test_sh  # pip's cached wheel stays in use
