"""The API keys file (``serve.api_keys_file``): read by the Serve app, which demands a key, and by the clients the
project runs against it (``rag ready``, ``rag eval --chat``, the demo), which send the first one."""

from __future__ import annotations

from pathlib import Path

from rag.config import ConfigError


def read_api_keys(path: str | None) -> list[str]:
    """The keys in the file, one per line, blank lines and ``#`` comments skipped; none when ``path`` is unset. A
    file that is missing or holds no key is a ConfigError, never an open endpoint."""
    if not path:
        return []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"serve.api_keys_file: cannot read {path}: {e.strerror}") from None
    keys = [k for k in (line.strip() for line in lines) if k and not k.startswith("#")]
    if not keys:
        raise ConfigError(f"serve.api_keys_file {path} holds no API key")
    return keys
