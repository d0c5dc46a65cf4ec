"""Models named by their Hugging Face hub id, fetched (or found in the cache) through ``huggingface_hub``.

Three forms, as llama.cpp's ``-hf`` and vLLM name them:

- ``org/repo``: the repo's HF-format model (config, tokenizer, weights) for
  transformers; for llama.cpp, the repo's one GGUF (or its ``Q4_K_M``, llama.cpp's
  default, when it has several).
- ``org/repo:QUANT``: the ``.gguf`` file of the repo whose name holds ``QUANT``
  (case-insensitive, ``Q4_K_M``); none or several is an error listing the files.
- ``org/repo/FILE.gguf`` (``FILE`` may hold folders): that file.

A GGUF split in parts (``name-00001-of-00003.gguf``) is fetched whole and
named by its first part, as llama.cpp loads it. ``huggingface_hub`` does the
fetching, so its cache (``HF_HOME``, ``HF_HUB_CACHE``), its offline mode
(``HF_HUB_OFFLINE=1``: the cache only) and its token (``HF_TOKEN``) apply.
It is imported only when a hub id is resolved; ``parse_hub_id`` needs nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HUB_FORMS = "org/repo, org/repo:QUANT or org/repo/FILE.gguf"
DEFAULT_QUANT = "Q4_K_M"  # what llama.cpp's -hf takes from a repo of several GGUFs when no quant is named
INSTALL_HINT = "pip install huggingface_hub (or 'backtrack_sampler[llamacpp]')"
MAX_LISTED = 20  # file names an error message lists before it says how many more

_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")  # a hub user, organization or repo name
_QUANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SPLIT = re.compile(r"(?P<base>.+)-(?P<part>\d{5})-of-(?P<parts>\d{5})\.gguf", re.IGNORECASE)
# Files an HF-format model needs besides its weights (transformers reads what it finds among them).
_HF_FILE_SUFFIXES = (".json", ".model", ".txt", ".tiktoken", ".jinja")


class HubModelError(Exception):
    """A hub id that is malformed, cannot be fetched, or names no usable file; the message says what to do."""


@dataclass(frozen=True)
class HubModel:
    """A parsed hub id: ``repo_id`` and at most one of ``quant`` and ``filename``."""

    repo_id: str
    quant: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        if self.quant:
            return f"{self.repo_id}:{self.quant}"
        return f"{self.repo_id}/{self.filename}" if self.filename else self.repo_id


def parse_hub_id(text: str, flag: str = "--model") -> HubModel | None:
    """``text`` as a hub id, or ``None`` when it reads as a local path (call only when nothing is there).

    Local paths: absolute, ``./``, ``../`` or ``~`` paths, a name without ``/``,
    and ``dir/x.gguf`` (no repo is named like a file). Anything else must be one
    of ``HUB_FORMS``.

    Raises:
        HubModelError: naming ``flag`` and ``text`` when it is shaped like an id but is not one.
    """
    if _reads_as_local_path(text):
        return None
    head, colon, quant = text.partition(":")
    parts = head.split("/")
    malformed = HubModelError(f"argument {flag}: no such file, and not a hub id ({HUB_FORMS}): {text!r}")
    if not all(_is_name(part) for part in parts[:2]):
        raise malformed
    repo_id = "/".join(parts[:2])
    if colon:
        if len(parts) != 2 or not _QUANT.fullmatch(quant):
            raise malformed
        return HubModel(repo_id, quant=quant)
    if len(parts) == 2:
        return HubModel(repo_id)
    filename = "/".join(parts[2:])
    if not filename.lower().endswith(".gguf") or any(part in ("", ".", "..") for part in parts[2:]):
        raise malformed
    return HubModel(repo_id, filename=filename)


def _reads_as_local_path(text: str) -> bool:
    if "/" not in text or "\\" in text or text.startswith(("/", "./", "../", "~")):
        return True
    rest = text.partition("/")[2]
    return "/" not in rest and ":" not in rest and rest.lower().endswith(".gguf")


def _is_name(part: str) -> bool:
    return len(part) <= 96 and bool(_NAME.fullmatch(part)) and "--" not in part and ".." not in part


def resolve(model: HubModel, directory: bool = False) -> Path:
    """The local path of ``model``, fetched into the hub cache unless it is there (offline: the cache only).

    Args:
        model: a parsed hub id.
        directory: for ``org/repo``, the repo's HF-format model directory when
            it has a ``config.json`` (transformers); else its GGUF (llama.cpp).

    Returns:
        A ``.gguf`` file (the first part of a split one), or with ``directory`` a snapshot directory.

    Raises:
        HubModelError: one line naming the repo and what to do (fetch it, name a quant...).
    """
    hf = _huggingface_hub(model)
    if model.filename:
        return _fetch_gguf(hf, model, model.filename, cache_only=False)
    files, cache_only = _repo_files(hf, model)
    if directory and model.quant is None and "config.json" in files:
        return _fetch_directory(hf, model, files, cache_only)
    return _fetch_gguf(hf, model, pick_gguf(model, files), cache_only)


def pick_gguf(model: HubModel, files: list[str]) -> str:
    """The file of ``files`` (a repo's, ``/``-separated) that ``model`` names: by its quant, or the only GGUF.

    A quant matches a name that holds it between non-alphanumeric characters
    (``Q4_0`` is not ``IQ4_0``), else one that merely holds it; the parts of
    one split GGUF count once (their first part is returned). Projector files
    (``mmproj``) are never picked.

    Raises:
        HubModelError: no match, or several, listing the repo's GGUF files.
    """
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf") and "mmproj" not in f.lower())
    if not ggufs:
        listed = f"; its files: {_listing(files)}" if files else ""
        hint = " (an HF-format repo loads with --backend transformers)" if "config.json" in files else ""
        raise HubModelError(f"argument --model: the hub repo {model.repo_id} has no .gguf file{hint}{listed}")
    if model.quant is None:
        models = _distinct(ggufs)
        if len(models) == 1:
            return models[0]
        default = _distinct(_matching(ggufs, DEFAULT_QUANT))
        if len(default) == 1:
            return default[0]
        raise HubModelError(
            f"argument --model: the hub repo {model.repo_id} holds several .gguf files ({_listing(ggufs)}); "
            f"name one with {model.repo_id}:QUANT or {model.repo_id}/FILE.gguf"
        )
    matches = _distinct(_matching(ggufs, model.quant))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise HubModelError(
            f"argument --model: no .gguf file of the hub repo {model.repo_id} matches {model.quant!r}; "
            f"its .gguf files: {_listing(ggufs)}"
        )
    raise HubModelError(
        f"argument --model: {model.quant!r} matches several .gguf files of the hub repo {model.repo_id} "
        f"({_listing(matches)}); name one with a longer quant or {model.repo_id}/FILE.gguf"
    )


def _matching(files: list[str], quant: str) -> list[str]:
    """The files whose name holds ``quant`` as a word of its own, else those holding it at all (case-insensitive)."""
    word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9])", re.IGNORECASE)
    names = {f: f.rsplit("/", 1)[-1] for f in files}
    whole = [f for f in files if word.search(names[f])]
    return whole or [f for f in files if quant.lower() in names[f].lower()]


def _distinct(files: list[str]) -> list[str]:
    """One file per model: a split GGUF's parts collapse into its first part (sorted, so part 00001 comes first)."""
    seen: dict[str, str] = {}
    for name in sorted(files):
        split = _SPLIT.fullmatch(name)
        seen.setdefault(split.group("base").lower() if split else name, name)
    return list(seen.values())


def _listing(files: list[str]) -> str:
    shown = ", ".join(files[:MAX_LISTED])
    return shown + (f" and {len(files) - MAX_LISTED} more" if len(files) > MAX_LISTED else "")


# -- huggingface_hub -------------------------------------------------------------------------------
def _huggingface_hub(model: HubModel):
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
    except ImportError:
        raise HubModelError(
            f"argument --model: {str(model)!r} is no local path, and loading a hub id needs huggingface_hub; "
            f"install it with: {INSTALL_HINT}"
        ) from None
    return huggingface_hub


def _offline(hf) -> bool:
    return bool(hf.constants.HF_HUB_OFFLINE)


def _repo_files(hf, model: HubModel) -> tuple[list[str], bool]:
    """The repo's files and whether they come from the cache only (offline, or the hub out of reach).

    Listed by the hub when it answers (``model_info``: one request, no retries, so a
    machine without network falls back at once), else those of the cached snapshot
    (``refs/main``).
    """
    if not _offline(hf):
        try:
            info = hf.model_info(model.repo_id, timeout=hf.constants.HF_HUB_ETAG_TIMEOUT)
            return sorted(sibling.rfilename for sibling in info.siblings or ()), False
        except Exception as exc:  # any failure to reach the hub falls back to the cache
            _raise_if_refused(hf, model, exc)
            unreachable: Exception | None = exc
    else:
        unreachable = None
    try:
        snapshot = Path(hf.snapshot_download(model.repo_id, local_files_only=True))
    except Exception:  # not cached (huggingface_hub's LocalEntryNotFoundError...)
        raise _not_cached(hf, model, unreachable) from None
    return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()), True


def _fetch_gguf(hf, model: HubModel, filename: str, cache_only: bool) -> Path:
    """``filename`` from the repo (and the other parts of a split GGUF), through the cache."""
    split = _SPLIT.fullmatch(filename)
    names = [filename]
    if split:
        base, parts = split.group("base"), int(split.group("parts"))
        names = [f"{base}-{i:05d}-of-{split.group('parts')}.gguf" for i in range(1, parts + 1)]
    paths = [_download(hf, model, name, cache_only) for name in names]
    return paths[names.index(filename)] if filename in names else paths[0]


def _download(hf, model: HubModel, filename: str, cache_only: bool) -> Path:
    """``hf_hub_download``: the cached file, fetched first unless ``cache_only`` (the hub did not answer)."""
    try:
        if cache_only:  # a hub that just failed to answer is not asked again
            return Path(hf.hf_hub_download(model.repo_id, filename, local_files_only=True))
        return Path(hf.hf_hub_download(model.repo_id, filename))
    except hf.errors.LocalEntryNotFoundError:  # offline, or the hub out of reach, and not in the cache
        raise _not_cached(hf, model, None, filename) from None
    except hf.errors.EntryNotFoundError:
        files = _listing([f for f in _safe_listing(hf, model) if f.lower().endswith(".gguf")])
        raise HubModelError(
            f"argument --model: the hub repo {model.repo_id} has no file {filename!r}"
            + (f"; its .gguf files: {files}" if files else "")
        ) from None
    except Exception as exc:  # refused (private, gated, missing) or a network failure
        _raise_if_refused(hf, model, exc)
        where = f"{filename!r} from the hub repo {model.repo_id}"
        raise HubModelError(f"argument --model: cannot fetch {where}: {_one_line(exc)}") from None


def _fetch_directory(hf, model: HubModel, files: list[str], cache_only: bool) -> Path:
    """The repo's snapshot with what transformers loads: top-level config and tokenizer files, and the weights."""
    top = [f for f in files if "/" not in f]
    weights = [f for f in top if f.endswith(".safetensors")] or [f for f in top if f.endswith(".bin")]
    wanted = [f for f in top if f.endswith(_HF_FILE_SUFFIXES)] + weights
    try:
        snapshot = Path(hf.snapshot_download(model.repo_id, allow_patterns=wanted, local_files_only=cache_only))
    except Exception as exc:  # as _download
        if isinstance(exc, hf.errors.LocalEntryNotFoundError):
            raise _not_cached(hf, model, None) from None
        _raise_if_refused(hf, model, exc)
        raise _not_cached(hf, model, exc) from None
    if not (snapshot / "config.json").is_file():
        raise _not_cached(hf, model, None, "config.json")
    return snapshot


def _safe_listing(hf, model: HubModel) -> list[str]:
    try:
        return _repo_files(hf, model)[0]
    except HubModelError:
        return []


def _raise_if_refused(hf, model: HubModel, exc: Exception) -> None:
    """A repo the hub refuses (gated, private or missing) is one line saying so, not a fall back to the cache."""
    errors = hf.errors
    if isinstance(exc, errors.GatedRepoError):
        raise HubModelError(
            f"argument --model: the hub repo {model.repo_id} is gated: accept its terms on huggingface.co "
            "and set HF_TOKEN (or run `hf auth login`)"
        ) from None
    if isinstance(exc, errors.RepositoryNotFoundError):
        raise HubModelError(
            f"argument --model: no hub repo {model.repo_id} (or it is private: set HF_TOKEN, or run `hf auth login`)"
        ) from None


def _not_cached(hf, model: HubModel, reason: Exception | None, filename: str | None = None) -> HubModelError:
    """The one line for a repo (or one of its files) that is not in the cache while the hub is out of reach."""
    what = f"{filename!r} of the hub repo {model.repo_id}" if filename else f"the hub repo {model.repo_id}"
    include = f' --include "*{model.quant}*"' if model.quant else (f" {model.filename}" if model.filename else "")
    command = f"huggingface-cli download {model.repo_id}{include}"
    if _offline(hf):
        why = "HF_HUB_OFFLINE is set"
        fix = f"run `{command}` (or `hf download`) with network access, or unset HF_HUB_OFFLINE"
    else:
        why = "the hub cannot be reached" + (f" ({_one_line(reason)})" if reason is not None else "")
        fix = f"run `{command}` (or `hf download`) where the hub can be reached"
    return HubModelError(
        f"argument --model: {what} is not in the hub cache ({hf.constants.HF_HUB_CACHE}) and {why}; {fix}"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
