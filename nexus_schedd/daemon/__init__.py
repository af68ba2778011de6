"""The daemon process: configuration, signals, logging and systemd integration."""
