"""Imports run one way: tui -> api -> models (DESIGN.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "shimmy.models.manager",
        "shimmy.models.probe",
        "shimmy.api.app",
        "shimmy.api.requestlog",
        "shimmy.api.server_control",
    ],
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


def test_the_dashboard_paints_before_importing_the_heavy_packages(tmp_path: Path) -> None:
    """The first frame waits for every import made before ``App.run``: FastAPI,
    uvicorn, llama.cpp and huggingface_hub (about half a second together here)
    load later, in the workers that need them. Runs the real ``shimmy`` entry
    point with ``App.run`` replaced by a probe of ``sys.modules``."""
    code = (
        "import sys\n"
        "from shimmy import cli\n"
        "from shimmy.tui.app import ShimmyApp\n"
        "heavy = ('fastapi', 'uvicorn', 'llama_cpp', 'huggingface_hub', 'pydantic')\n"
        "def probe(self):\n"
        "    print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "    return 0\n"
        "ShimmyApp.run = probe\n"
        "sys.exit(cli.main(['--bind', '127.0.0.1:0']))\n"
    )
    env = {"SHIMMY_HOME": str(tmp_path / "shimmy"), "HOME": str(tmp_path), "PATH": ""}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_server_imports_llama_cpps_bindings_only() -> None:
    """shimmy drives llama.cpp through llama-cpp-python's ctypes bindings; the
    package's high-level API (numpy, its Jinja chat formats: 29 MB resident) and
    Jinja itself (the template workers render) stay out of the serving process
    (shimmy/models/llama_bindings.py). The bindings and the grammar converter are
    there, with the package's version."""
    code = (
        "import sys\n"
        "import shimmy.cli.serve, shimmy.api.app, shimmy.models.manager, shimmy.diagnostics\n"
        "import shimmy.models.llamacpp, shimmy.models.grammar, shimmy.models.tools.formats\n"
        "import shimmy.models.backends\n"
        "shimmy.models.backends.devices()\n"
        "import llama_cpp\n"
        "assert llama_cpp.llama_backend_init and llama_cpp.llama_grammar.SchemaConverter\n"
        "assert llama_cpp.__version__, 'no version'\n"
        "print(sorted(m for m in ('numpy', 'llama_cpp.llama', 'llama_cpp.llama_chat_format',"
        " 'jinja2') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
