"""Ollama's API, on its own listener (``--ollama``): see :mod:`.routes`."""
