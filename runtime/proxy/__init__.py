"""The proxy data plane: sans-IO HTTP/1.1 core, uvloop transports, workers."""
