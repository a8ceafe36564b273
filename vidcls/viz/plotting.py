"""matplotlib for the commands that draw PNGs (benchmark, evaluate, timeline), or one line
saying how to get it: it is an optional extra, not a core dependency."""

from __future__ import annotations

from typing import Any

from vidcls.errors import VidclsError


def require_matplotlib() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or a one-line error saying how to get it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise VidclsError("--plot needs matplotlib: pip install matplotlib (the vidcls 'plot' extra)") from None
    return plt
