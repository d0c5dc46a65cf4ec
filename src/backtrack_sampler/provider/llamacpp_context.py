"""llama.cpp context settings shared by the providers and the benchmarks: flash attention, batched contexts.

llama.cpp's own default for flash attention is ``auto`` (on where the device
supports it, which includes every CPU); llama-cpp-python 0.3.36's ``Llama``
takes only ``flash_attn=True/False`` and so always sets on or off.
``load_llama`` and ``BatchedLlamacpp`` default to ``auto``, so the
single-sequence and batched paths compute attention alike.
"""

from __future__ import annotations

import contextlib
from typing import Any

FLASH_ATTN_CHOICES = ("auto", "on", "off")
"""Flash attention settings, as llama.cpp's ``--flash-attn`` names them."""


def flash_attn_type(value: str | bool | None) -> int:
    """llama.cpp's ``llama_flash_attn_type`` for ``"auto"``/``None``, ``"on"``/``True`` or ``"off"``/``False``."""
    import llama_cpp

    types = {
        "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
        "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
        "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }
    if value is None or value is True or value is False:
        return types["auto" if value is None else "on" if value else "off"]
    if isinstance(value, str) and value in types:
        return types[value]
    raise ValueError(f"flash_attn must be one of 'auto', 'on', 'off', True, False or None, got {value!r}")


def flash_attn_name(llm: Any) -> str:
    """``"auto"``, ``"on"`` or ``"off"``: what a ``Llama``'s context was asked for."""
    import llama_cpp

    names = {
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO: "auto",
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED: "on",
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED: "off",
    }
    return names.get(int(llm.context_params.flash_attn_type), str(llm.context_params.flash_attn_type))


def set_flash_attn(llm: Any, value: str | bool | None) -> None:
    """Give ``llm`` (a fresh ``llama_cpp.Llama``) a context with flash attention ``value``.

    llama-cpp-python builds the context inside ``Llama.__init__`` with on or
    off only; this builds it again with the setting asked for (the old one is
    freed). Call it before the first evaluation: the KV cache starts empty.
    """
    from llama_cpp import _internals

    wanted = flash_attn_type(value)
    if int(llm.context_params.flash_attn_type) == wanted:
        return
    if getattr(llm, "lora_path", None):
        raise ValueError("set_flash_attn cannot rebuild the context of a Llama with a LoRA adapter")
    llm.context_params.flash_attn_type = wanted
    context = _internals.LlamaContext(model=llm._model, params=llm.context_params, verbose=llm.verbose)
    llm._ctx.close()
    llm._ctx = llm._stack.enter_context(contextlib.closing(context))
    llm.n_tokens = 0


def batched_context_params(llm: Any, n_slots: int, n_ctx: int, n_batch: int, flash_attn: str | bool | None) -> Any:
    """The context parameters of ``n_slots`` sequences of ``n_ctx`` positions, each its own KV stream.

    ``flash_attn`` ``None`` keeps the ``Llama``'s own setting. ``BatchedLlamacpp``
    and the plain batched loop of ``bench/batched_throughput.py`` both use these.
    """
    import llama_cpp

    params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
    params.n_ctx = n_ctx * n_slots
    params.n_seq_max = n_slots
    params.n_batch = params.n_ubatch = max(n_batch, n_slots)
    params.kv_unified = False  # a KV stream per sequence: attention reads only its own cells
    if flash_attn is not None:
        params.flash_attn_type = flash_attn_type(flash_attn)
    return params
