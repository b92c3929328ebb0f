"""llama.cpp's C API (llama-cpp-python's ctypes bindings) without the rest of
llama-cpp-python.

``import llama_cpp`` runs the package's ``__init__``, which imports its
high-level API too (``Llama``, with numpy and its Jinja chat formats): about
29 MB resident in every shimmy process (numpy 15 MB, the rest 14 MB), for code
shimmy never calls: it drives llama.cpp through the bindings alone
(:mod:`shimmy.models.llamacpp`). So shimmy enters the package here as a module
that holds only the bindings' names (what its ``from .llama_cpp import *``
gives it) and skips ``from .llama import *``; its submodules
(``llama_cpp.llama_cpp``, ``llama_cpp._ggml``, ``llama_cpp.llama_grammar``)
import as usual. A package already imported in full (by a test, say) is used
as it is.

Import ``llama_cpp`` and ``llama_grammar`` from here (``from
shimmy.models.llama_bindings import llama_cpp``), never directly, wherever
shimmy may be the first to import them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys


def _enter_bindings_only() -> None:
    if "llama_cpp" in sys.modules:
        return
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError("No module named 'llama_cpp'", name="llama_cpp")
    package = importlib.util.module_from_spec(spec)  # its __init__ is not run
    sys.modules["llama_cpp"] = package
    try:
        bindings = importlib.import_module("llama_cpp.llama_cpp")
    except BaseException:
        del sys.modules["llama_cpp"]
        raise
    package.__dict__.update(
        {name: value for name, value in vars(bindings).items() if not name.startswith("_")}
    )
    try:
        package.__dict__["__version__"] = importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:  # a source checkout on the path
        pass


_enter_bindings_only()

import llama_cpp  # noqa: E402  (the bindings only, entered above)
from llama_cpp import llama_grammar  # noqa: E402  (JSON schema to GBNF; 0.1 MB)

__all__ = ["llama_cpp", "llama_grammar"]
