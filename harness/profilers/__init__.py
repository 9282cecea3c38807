"""Profilers that look at a gateway process from outside, one module per tool.

- ``perf``: native flamegraphs of any process, interpreter or not (rs-server, rs-core's Tokio
  threads, the peers): ``perf record -e cpu-clock`` with DWARF call graphs, folded and drawn
  by inferno (sampled).
- ``cachegrind``: where one request's instructions go, per function, from two Cachegrind
  runs at N1 and N2 requests, differenced (exact, user space).
Which flamegraph tools a target gets (py-spy for the Python threads, perf for every thread)
is ``harness.infra.targets.flamegraph_tools``; py-spy's own flamegraphs stay in
``harness.infra.probes.record_flamegraph``. docs/profiling.md says how each view is made.
"""
