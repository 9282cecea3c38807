"""One module per `gatewaylab` subcommand."""
