"""Model specs -> loaded models (embedded default, GGUF files, local directories, hub ids)."""

from onlinespec.models.embedded import DEFAULT_MODEL, EMBEDDED, cache_root, embedded_model_dir
from onlinespec.models.resolve import DTYPES, LoadedModel, load_model, parse_dtype

__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "EMBEDDED",
    "LoadedModel",
    "cache_root",
    "embedded_model_dir",
    "load_model",
    "parse_dtype",
]
