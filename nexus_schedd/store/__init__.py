"""Durable storage of jobs and runs: one interface (:mod:`.base`), one module per backend."""
