"""Handler plugins: the Protocol, the registry and loading, and the built-in handlers."""
