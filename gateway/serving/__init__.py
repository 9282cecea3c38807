"""Serving a gateway: `server` (options -> the rung, its shell, uvicorn or granian; or the
rs-server binary; or a unit of workers), `supervisor` (a unit of N workers on one port),
`worker` (inside a worker: its place in the unit, the control socket), `launch` (start a
gateway as a child process: tests, sweeps, notebooks) and `framing` (uvicorn's HTTP/1
protocol with the gateway's framing caps)."""
