"""The core stays free of heavy backends."""

import subprocess
import sys


def test_core_imports_no_backend():
    code = (
        "import sys, backtrack_sampler, backtrack_sampler.provider.scripted_provider\n"
        "from backtrack_sampler import BacktrackSampler, AntiSlopStrategy, CreativeWritingStrategy\n"
        "import backtrack_sampler.provider.llamacpp_provider\n"
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'curses') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_seed_import_paths():
    from backtrack_sampler import AntiSlopStrategy, BacktrackSampler, CreativeWritingStrategy
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    names = (BacktrackSampler, AntiSlopStrategy, CreativeWritingStrategy, LlamacppProvider)
    assert all(callable(c) for c in names)
