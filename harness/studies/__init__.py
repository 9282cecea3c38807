"""Studies: the experiments behind the notebooks and `make demo` (the main study, A/A
comparisons, the router, tracing and interpreter studies, the reliability figures)."""
