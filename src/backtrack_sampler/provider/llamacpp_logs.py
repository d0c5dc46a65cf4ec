"""llama.cpp's own log lines: errors only on stderr, unless asked for (``--verbose``).

llama-cpp-python 0.3.36 installs a log callback that reads ggml's log levels by an
older numbering (3 was ERROR; ggml now has NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4,
CONT 5), so with ``verbose=False`` every warning still reaches stderr: on Gemma 3,
``llama_kv_cache_iswa: using full-size SWA cache (...)`` at each model load.
``route_llama_logs`` replaces that callback for the process.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5  # the rest of the previous line

_callback: Any = None  # the installed ctypes callback: kept alive here, or llama.cpp would call freed memory
_state = {"verbose": False, "showing": False}


def route_llama_logs(verbose: bool = False) -> None:
    """Send llama.cpp's log lines to stderr: all of them when ``verbose``, else only errors."""
    global _callback
    import llama_cpp

    _state["verbose"] = verbose
    if _callback is None:

        @llama_cpp.llama_log_callback
        def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            if level != GGML_LOG_LEVEL_CONT:
                _state["showing"] = _state["verbose"] or level == GGML_LOG_LEVEL_ERROR
            if _state["showing"] and sys.stderr is not None:
                try:
                    sys.stderr.write(text.decode("utf-8", errors="replace"))
                    sys.stderr.flush()
                except (OSError, ValueError):  # stderr closed or full: the line is dropped
                    pass

        _callback = _log
        llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
