"""``models.physical_cores``: llama.cpp's default thread count, one per core this process may use."""

from __future__ import annotations

import pytest

from backtrack_sampler import models


def cpuinfo(cpus: list[tuple[int, int, int]], with_core_ids: bool = True) -> str:
    """A /proc/cpuinfo text: one block per (processor, physical id, core id)."""
    blocks = []
    for processor, package, core in cpus:
        lines = [f"processor\t: {processor}", "vendor_id\t: GenuineIntel", "flags\t\t: fpu sse avx2"]
        if with_core_ids:
            lines += [f"physical id\t: {package}", f"core id\t\t: {core}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def test_a_core_per_cpu_counts_every_cpu():
    """This sandbox's kind of VM: 2 CPUs, one thread per core (llama-cpp-python's default would use 1)."""
    assert models.physical_cores(cpuinfo([(0, 0, 0), (1, 0, 1)]), {0, 1}) == 2


def test_hardware_threads_of_one_core_count_once():
    text = cpuinfo([(0, 0, 0), (1, 0, 1), (2, 0, 0), (3, 0, 1)])  # 2 cores x 2 threads
    assert models.physical_cores(text, {0, 1, 2, 3}) == 2


def test_cores_of_two_packages_are_different_cores():
    text = cpuinfo([(0, 0, 0), (1, 1, 0)])  # core 0 of each socket
    assert models.physical_cores(text, {0, 1}) == 2


def test_only_the_cpus_this_process_may_use_count():
    text = cpuinfo([(0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 0, 3)])
    assert models.physical_cores(text, {1, 3}) == 2
    assert models.physical_cores(text, {2}) == 1


@pytest.mark.parametrize("text", ["", "garbage without fields", cpuinfo([(0, 0, 0), (1, 0, 0)], with_core_ids=False)])
def test_without_core_ids_every_allowed_cpu_counts(text):
    """aarch64 and some VMs list no core ids: fall back to the CPUs allowed."""
    assert models.physical_cores(text, {0, 1, 2}) == 3


def test_this_machine_has_at_least_one_core_and_no_more_than_its_cpus():
    assert 1 <= models.physical_cores() <= models.MAX_THREADS


def test_load_llama_uses_them_unless_told(smollm_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    assert models.load_llama(n_ctx=64).context_params.n_threads == models.physical_cores()
    assert models.load_llama(n_ctx=64, n_threads=1).context_params.n_threads == 1


def test_the_help_says_the_default(capsys):
    from backtrack_sampler import cli

    assert cli.main(["generate", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"the physical cores here, {models.physical_cores()}" in out
