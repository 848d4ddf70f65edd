"""A command-line client (`vaas …`) and a small typed HTTP wrapper for the VAAS public API.

Only the HTTP API is used: nothing here imports the server's packages (api/, db/, worker/), so the
client works against any deployment given its URL and an API key.
"""
from __future__ import annotations

from client.http import DEFAULT_URL, VaasClient, VaasError

__all__ = ["DEFAULT_URL", "VaasClient", "VaasError"]
