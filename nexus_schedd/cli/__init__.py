"""``nexus-schedctl``: the command-line client."""
