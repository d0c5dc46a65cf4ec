"""The texts to measure: the results JSONL of ``backtrack-sampler batch``, a text file, or a folder of ``.txt`` files.

A file whose first non-blank character is ``{`` is read as batch results:
one JSON object per line, the text in ``"text"``; error records (``"error"``)
are skipped and counted, and so are the results that ended at once (no token
generated: ``stats.tokens_emitted`` 0, such as an EOS first). Any other file is one text. A folder gives one text
per ``*.txt`` file in it (not its subfolders), in name order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from backtrack_sampler.core.text_files import read_lines, read_text


@dataclass(frozen=True)
class LoadedTexts:
    """The texts of one input, and what was left out.

    Attributes:
        texts: the texts, in file order.
        lines: for batch results, each text's input line number (the record's
            ``"line"``, ``None`` when missing); empty for text files.
        skipped: error records left out.
        ended_at_once: batch results that ended before their first token;
            ``None`` when the input does not say (text files, results without
            ``stats.tokens_emitted``).
        prompt_modes: for batch results, how each text's prompt reached the
            model (the record's ``"prompt_mode"``: ``"chat"`` or ``"raw"``;
            ``None`` when missing, as in results older than the field).
    """

    texts: tuple[str, ...]
    lines: tuple[int | None, ...] = ()
    skipped: int = 0
    ended_at_once: int | None = None
    prompt_modes: tuple[str | None, ...] = ()


def load_texts(path: str | os.PathLike[str]) -> LoadedTexts:
    """The texts of ``path`` (see the module docstring).

    Raises:
        ValueError: the path is missing, cannot be read, is neither batch
            results nor UTF-8 text, or holds no text; the message names the path.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.txt") if p.is_file())  # regular files only
        if not files:
            raise ValueError(f"{str(path)!r} is a folder with no .txt file in it")
        loaded = LoadedTexts(tuple(_read(p) for p in files))
    elif path.exists():
        content = _read(path)  # refuses a device, a FIFO, a socket
        loaded = _results(path) if content.lstrip().startswith("{") else LoadedTexts((content,))
    else:
        raise ValueError(f"file not found: {str(path)!r}")
    if not any(text.strip() for text in loaded.texts):
        raise ValueError(f"{str(path)!r} holds no text to measure")
    return loaded


def _read(path: Path) -> str:
    try:
        return read_text(path)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{str(path)!r} is neither batch results (JSONL) nor UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None


def _results(path: Path) -> LoadedTexts:
    """The texts of the result records of a ``batch`` output file (read again, a line at a time)."""
    texts, lines, modes, skipped = [], [], [], 0
    emitted = []  # each result's stats.tokens_emitted, where it has one
    try:
        for line in read_lines(path):
            record = _record(line.text(), line.number, path)  # UTF-8: ``_read`` checked it
            if record is None:
                continue
            if "error" in record:
                skipped += 1
            else:
                texts.append(record["text"])
                line_number = record.get("line")
                lines.append(line_number if isinstance(line_number, int) else None)
                mode = record.get("prompt_mode")
                modes.append(mode if isinstance(mode, str) else None)
                stats = record.get("stats")
                tokens = stats.get("tokens_emitted") if isinstance(stats, dict) else None
                if isinstance(tokens, int) and not isinstance(tokens, bool):
                    emitted.append(tokens)
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if not texts:
        raise ValueError(f"{str(path)!r} holds no result with a text ({skipped} error records)")
    ended_at_once = sum(1 for tokens in emitted if tokens == 0) if emitted else None
    return LoadedTexts(tuple(texts), tuple(lines), skipped, ended_at_once, tuple(modes))


def _record(text: str, number: int, path: Path) -> dict | None:
    """The record on line ``number``: an error record or one with a ``"text"``; ``None`` for a blank line."""
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} line {number} is not JSON ({exc.msg}): not batch results") from None
    if not isinstance(record, dict) or ("error" not in record and not isinstance(record.get("text"), str)):
        raise ValueError(f'{str(path)!r} line {number} has no "text" string: not batch results')
    return record
