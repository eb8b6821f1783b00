"""The node's HTTP API: REST under ``/v1``, KLF messages, live job events, health, metrics."""
