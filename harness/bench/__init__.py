"""Microbenchmarks, one module per `gatewaylab bench NAME`."""
