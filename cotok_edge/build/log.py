"""Progress lines of the build, on stderr (stdout stays for the final summary)."""

from __future__ import annotations

import sys
import time

__all__ = ["Log"]


class Log:
    """Progress lines on stderr with the elapsed time; stdout stays for the final summary."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)
