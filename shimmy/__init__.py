"""shimmy: a local LLM server for GGUF models, with a terminal dashboard."""

__version__ = "0.1.0"
