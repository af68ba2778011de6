"""The engine: the in-memory heap of due times, dispatch to handlers, retries,
misfire and overlap policies, and checkpoints to the store."""
