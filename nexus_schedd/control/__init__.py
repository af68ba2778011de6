"""The control protocol: Varlink over the Unix socket, its server and its client."""
