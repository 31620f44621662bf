"""``python -m cotok_edge.build``: see :mod:`cotok_edge.build`."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
