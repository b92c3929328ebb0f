"""The ``shimmy`` command: one parser (parser.py), one module per command, the
output helpers they share (output.py) and the entry point (entry.py).

Heavy packages (FastAPI, uvicorn, llama.cpp, huggingface_hub) are imported
inside the command functions, never here: the dashboard paints before them.
"""

from shimmy.cli.entry import main
from shimmy.cli.parser import build_parser

__all__ = ["build_parser", "main"]
