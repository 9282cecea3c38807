"""Infrastructure: hardware profiles and pinning, the native mock and load generator as
processes, a mock fleet and an OTLP receiver, the probes that watch a gateway from outside,
the interpreter axis, the sweep targets and the sweep itself, the reliability tools
(torture, soak, the OpenAPI fuzzer) and the lean bundle."""
