"""The side-by-side view in headless Chromium: measured only when the frontend, playwright and Chromium exist."""

from __future__ import annotations

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATIC = os.path.join(ROOT, "tb_unfreeze", "plugin", "static")
CHROMIUM = "/usr/bin/chromium"


def unavailable() -> str:
    """Why the view cannot be measured here, or '' when it can."""
    built = os.path.isdir(STATIC) and any(name.endswith(".js") for name in os.listdir(STATIC))
    if not built:
        return ("the frontend is not built yet (no JavaScript in tb_unfreeze/plugin/static/; frontend/ holds only "
                "sources), so there is no side-by-side view to draw")
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed"
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} does not exist"
    return "the side-by-side view has no measurement hook in bench/ yet (bench/frontend.py)"
