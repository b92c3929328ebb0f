"""Imports run one way: tui -> api -> models (DESIGN.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    ["shimmy.models.manager", "shimmy.models.probe", "shimmy.api.app", "shimmy.api.requestlog"],
)
def test_headless_modules_never_import_textual(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')"
        " or m.startswith('shimmy.tui'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_models_never_import_api() -> None:
    code = (
        "import sys, shimmy.models.manager, shimmy.models.probe\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('shimmy.api', 'fastapi')))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
