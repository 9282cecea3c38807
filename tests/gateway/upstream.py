"""A small aiohttp upstream for the gateway tests: OpenAI chat completions (JSON and SSE) and
Anthropic-style messages, with faults chosen by the model name, counting what reaches it.

Model names: "fault-500" (HTTP 500), "fault-reset" (connection closed without a response),
"fault-timeout" (answers after `slow_s`), "fault-malformed" (200 with a non-JSON body),
"fault-400" (an OpenAI-shaped 400); "gated-stream" (streams the first event, then waits for
`open_gate()` -- up to 10 s -- before the rest; `gate_opened_in_time` says which came first);
anything else answers normally.
"""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web

TEXT = "the quick brown fox jumps over the lazy dog"


class FixtureUpstream:
    def __init__(self, slow_s: float = 3.0):
        self.slow_s = slow_s
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner = None
        self.url = ""
        self._gate: asyncio.Event | None = None
        self.gate_opened_in_time: bool | None = None

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> FixtureUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def open_gate(self) -> None:
        self._loop.call_soon_threadsafe(lambda: self._gate and self._gate.set())

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    async def _start(self):
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _fault(self, request, model: str):
        if model == "fault-500":
            return web.json_response(
                {"error": {"message": "boom", "type": "server_error", "code": None}}, status=500
            )
        if model == "fault-400":
            return web.json_response(
                {
                    "error": {
                        "message": "bad upstream request",
                        "type": "invalid_request_error",
                        "code": "bad",
                    }
                },
                status=400,
            )
        if model == "fault-reset":
            request.transport.close()
            raise asyncio.CancelledError  # aiohttp drops the connection
        if model == "fault-timeout":
            await asyncio.sleep(self.slow_s)
        if model == "fault-malformed":
            return web.Response(body=b"this is not json", content_type="application/json")
        return None

    async def _chat(self, request: web.Request):
        body = await request.read()
        req = json.loads(body)
        with self._lock:
            self.requests.append(
                {"path": "/v1/chat/completions", "body": req, "headers": dict(request.headers)}
            )
        fault = await self._fault(request, req.get("model", ""))
        if fault is not None:
            return fault
        words = TEXT.split()
        if req.get("stream"):
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            base = {
                "id": "chatcmpl-fixture",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": req["model"],
            }
            await resp.write(
                b"data: "
                + json.dumps(
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                        ],
                    }
                ).encode()
                + b"\n\n"
            )
            if req["model"] == "gated-stream":
                self._gate = asyncio.Event()
                self.gate_opened_in_time = None
                try:
                    await asyncio.wait_for(self._gate.wait(), 10)
                    self.gate_opened_in_time = True
                except TimeoutError:
                    self.gate_opened_in_time = False
            for i, w in enumerate(words):
                ev = {
                    **base,
                    "choices": [
                        {"index": 0, "delta": {"content": (" " if i else "") + w}, "finish_reason": None}
                    ],
                }
                await resp.write(b"data: " + json.dumps(ev).encode() + b"\n\n")
            await resp.write(
                b"data: "
                + json.dumps(
                    {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                ).encode()
                + b"\n\n"
            )
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        return web.json_response(
            {
                "id": "chatcmpl-fixture",
                "object": "chat.completion",
                "created": 1,
                "model": req["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": len(words),
                    "total_tokens": 5 + len(words),
                },
            }
        )

    async def _messages(self, request: web.Request):
        body = await request.read()
        req = json.loads(body)
        with self._lock:
            self.requests.append({"path": "/v1/messages", "body": req, "headers": dict(request.headers)})
        fault = await self._fault(request, req.get("model", ""))
        if fault is not None:
            return fault
        if req.get("stream"):
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)

            async def ev(kind, data):
                await resp.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())

            await ev(
                "message_start",
                {
                    "type": "message_start",
                    "message": {"id": "msg_1", "model": req["model"], "usage": {"input_tokens": 5}},
                },
            )
            await ev(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            for i, w in enumerate(TEXT.split()):
                await ev(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": (" " if i else "") + w},
                    },
                )
            await ev("content_block_stop", {"type": "content_block_stop", "index": 0})
            await ev(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 9},
                },
            )
            await ev("message_stop", {"type": "message_stop"})
            await resp.write_eof()
            return resp
        return web.json_response(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": req["model"],
                "content": [{"type": "text", "text": TEXT}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 5, "output_tokens": 9},
            }
        )
