"""The Python ASGI shells around a rung (`--shell`): `asgi`, the lean raw ASGI application
(the default), and `fastapi`. Both call `gateway.rungs.base.GatewayBase` only."""
