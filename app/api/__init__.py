"""HTTP routes: scoring and model info under /v1 (API key), health and metrics (open)."""
