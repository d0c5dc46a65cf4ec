"""The texts to measure: the results JSONL of ``backtrack-sampler batch``, a text file, or a folder of ``.txt`` files.

A file whose first non-blank character is ``{`` is read as batch results:
one JSON object per line, the text in ``"text"``; error records (``"error"``)
are skipped and counted. Any other file is one text. A folder gives one text
per ``*.txt`` file in it (not its subfolders), in name order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LoadedTexts:
    """The texts of one input, and what was left out.

    Attributes:
        texts: the texts, in file order.
        lines: for batch results, each text's input line number (the record's
            ``"line"``, ``None`` when missing); empty for text files.
        skipped: error records left out.
    """

    texts: tuple[str, ...]
    lines: tuple[int | None, ...] = ()
    skipped: int = 0


def load_texts(path: str | os.PathLike[str]) -> LoadedTexts:
    """The texts of ``path`` (see the module docstring).

    Raises:
        ValueError: the path is missing, cannot be read, is neither batch
            results nor UTF-8 text, or holds no text; the message names the path.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())
        if not files:
            raise ValueError(f"{str(path)!r} is a folder with no .txt file in it")
        loaded = LoadedTexts(tuple(_read(p) for p in files))
    elif path.exists():
        content = _read(path)
        loaded = _results(content, path) if content.lstrip().startswith("{") else LoadedTexts((content,))
    else:
        raise ValueError(f"file not found: {str(path)!r}")
    if not any(text.strip() for text in loaded.texts):
        raise ValueError(f"{str(path)!r} holds no text to measure")
    return loaded


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{str(path)!r} is neither batch results (JSONL) nor UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None


def _results(content: str, path: Path) -> LoadedTexts:
    """The texts of the result records of a ``batch`` output file."""
    texts, lines, skipped = [], [], 0
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{str(path)!r} line {number} is not JSON ({exc.msg}): not batch results") from None
        if isinstance(record, dict) and "error" in record:
            skipped += 1
        elif isinstance(record, dict) and isinstance(record.get("text"), str):
            texts.append(record["text"])
            line_number = record.get("line")
            lines.append(line_number if isinstance(line_number, int) else None)
        else:
            raise ValueError(f'{str(path)!r} line {number} has no "text" string: not batch results')
    if not texts:
        raise ValueError(f"{str(path)!r} holds no result with a text ({skipped} error records)")
    return LoadedTexts(tuple(texts), tuple(lines), skipped)
