"""The online feature store: Redis client for the by-id routes, and the commands that fill it."""
