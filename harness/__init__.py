"""harness — profile → start processes → drive load → probe → store → report.

The `gatewaylab` CLI lives in `harness.cli`; each subcommand is one module in
`harness.commands` (imported lazily so the command line starts fast).
"""
