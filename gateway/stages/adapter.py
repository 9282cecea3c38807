"""Adapter stage, Python twin: OpenAI chat request -> upstream request, and back.

Bytes in, bytes out; JSON out is compact (no spaces) with key order preserved and non-ASCII
written as UTF-8 (orjson / serde_json with preserve_order), so the twins' bytes are
identical. Invalid JSON or a missing required field -> InvalidInput.

kind "openai" (an OpenAI-compatible upstream):
  to_upstream:    the request object with "model" set to the upstream model (replaced in
                  place, or appended last when absent).
  from_upstream:  the response object with "model" set to the public model the same way.
  stream_event:   b"[DONE]" (surrounding ASCII whitespace ignored) -> [] (the gateway sends
                  its own `data: [DONE]` at the end); otherwise the event object with "model"
                  replaced when present -> [json].

kind "anthropic" (Messages API):
  to_upstream -> {"model": upstream_model,
                  "max_tokens": request["max_tokens"] if it is present and not null, else 1024,
                  "system": "\\n".join(contents of role "system" messages)   (only if any),
                  "messages": [{"role": m["role"], "content": m["content"]} for other messages],
                  then, when present in the request and not null, in this order:
                  "temperature", "top_p", "stop_sequences" (from "stop": a string becomes a
                  one-element list), "stream" (only when true)}
  from_upstream -> {"id": r["id"], "object": "chat.completion", "created": 0,
                  "model": public_model,
                  "choices": [{"index": 0, "message": {"role": "assistant",
                               "content": "".join(b["text"] for b in r["content"] if b["type"] == "text")},
                               "finish_reason": FINISH(r.get("stop_reason"))}],
                  "usage": {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}}
                  with i, o = r["usage"]["input_tokens"], r["usage"]["output_tokens"] (0 if absent).
  FINISH: end_turn|stop_sequence -> "stop", max_tokens -> "length", tool_use -> "tool_calls",
          null/absent -> null, anything else -> "stop".
  stream_event (the adapter is stateless, so every chunk carries id "chatcmpl-anthropic"):
    CHUNK(delta, finish) = {"id": "chatcmpl-anthropic", "object": "chat.completion.chunk",
                            "created": 0, "model": public_model,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    message_start                         -> [CHUNK({"role": "assistant", "content": ""}, null)]
    content_block_delta, delta.type == "text_delta" -> [CHUNK({"content": delta.text}, null)]
    message_delta with delta.stop_reason  -> [CHUNK({}, FINISH(stop_reason))]
    error                                 -> InvalidInput("upstream stream error: <message>")
    anything else (ping, content_block_start/stop, message_stop, ...) -> []
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from gateway.errors import InvalidInput

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
_DONE = b"[DONE]"


def _loads(data: bytes, what: str):
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"{what}: invalid JSON: {e}") from None
    if type(obj) is not dict:
        raise InvalidInput(f"{what}: expected a JSON object")
    return obj


def _dumps(obj) -> bytes:
    """orjson.dumps, with its refusal as the InvalidInput the Rust twin raises: orjson reads
    1024 levels of nesting but writes only 254, so a deep enough body parses and then
    cannot be written."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError as e:
        if "recursion" in str(e).lower():
            raise InvalidInput(
                "adapter: JSON nested too deeply to write (orjson: recursion limit reached)"
            ) from None
        raise InvalidInput(f"adapter: cannot write JSON ({e})") from None


def _finish(reason):
    if reason is None:
        return None
    if type(reason) in (list, dict):
        raise InvalidInput("adapter: stop_reason must be a string")
    return _FINISH.get(reason, "stop")


def _chunk(public_model: str, delta: dict, finish) -> bytes:
    return _dumps(
        {
            "id": "chatcmpl-anthropic",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": public_model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


class Adapter:
    __slots__ = ("kind", "to_upstream", "from_upstream", "stream_event")

    def __init__(self, kind: str):
        self.to_upstream: Callable[[bytes, str], bytes]
        self.from_upstream: Callable[[bytes, str], bytes]
        if kind == "openai":
            self.to_upstream = self._openai_swap_model
            self.from_upstream = self._openai_swap_model
            self.stream_event = self._openai_event
        elif kind == "anthropic":
            self.to_upstream = self._anthropic_request
            self.from_upstream = self._anthropic_response
            self.stream_event = self._anthropic_event
        else:
            raise InvalidInput(f"Adapter: kind must be 'openai' or 'anthropic', got {kind!r}")
        self.kind = kind

    # --- openai -----------------------------------------------------------------------
    @staticmethod
    def _openai_swap_model(body: bytes, model: str) -> bytes:
        obj = _loads(body, "adapter")
        obj["model"] = model
        return _dumps(obj)

    @staticmethod
    def _openai_event(event: bytes, public_model: str) -> list[bytes]:
        if event.strip() == _DONE:
            return []
        obj = _loads(event, "adapter stream event")
        if "model" in obj:
            obj["model"] = public_model
        return [_dumps(obj)]

    # --- anthropic --------------------------------------------------------------------
    @staticmethod
    def _anthropic_request(body: bytes, upstream_model: str) -> bytes:
        req = _loads(body, "adapter")
        msgs = req.get("messages")
        if type(msgs) is not list:
            raise InvalidInput("adapter: 'messages' must be a list")
        system, messages = [], []
        for m in msgs:
            if type(m) is not dict or "role" not in m or "content" not in m:
                raise InvalidInput("adapter: each message needs 'role' and 'content'")
            if m["role"] == "system":
                if type(m["content"]) is not str:
                    raise InvalidInput("adapter: a system message's content must be a string")
                system.append(m["content"])
            else:
                messages.append({"role": m["role"], "content": m["content"]})
        max_tokens = req.get("max_tokens")
        out = {"model": upstream_model, "max_tokens": 1024 if max_tokens is None else max_tokens}
        if system:
            out["system"] = "\n".join(system)
        out["messages"] = messages
        for k in ("temperature", "top_p"):
            if req.get(k) is not None:
                out[k] = req[k]
        stop = req.get("stop")
        if stop is not None:
            out["stop_sequences"] = [stop] if type(stop) is str else stop
        if req.get("stream") is True:
            out["stream"] = True
        return _dumps(out)

    @staticmethod
    def _anthropic_response(body: bytes, public_model: str) -> bytes:
        r = _loads(body, "adapter upstream response")
        try:
            text = "".join(b["text"] for b in r["content"] if b["type"] == "text")
            rid = r["id"]
        except (KeyError, TypeError) as e:
            raise InvalidInput(f"adapter upstream response: missing or bad field {e}") from None
        usage = r.get("usage") or {}
        if type(usage) is not dict:
            raise InvalidInput("adapter upstream response: usage must be an object")
        i, o = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        if type(i) is not int or type(o) is not int:
            raise InvalidInput("adapter upstream response: usage token counts must be integers")
        if not -(2**63) <= i + o < 2**64:  # orjson writes 64-bit integers only
            raise InvalidInput("adapter upstream response: usage total exceeds 64 bits")
        return _dumps(
            {
                "id": rid,
                "object": "chat.completion",
                "created": 0,
                "model": public_model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": _finish(r.get("stop_reason")),
                    }
                ],
                "usage": {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o},
            }
        )

    @staticmethod
    def _anthropic_event(event: bytes, public_model: str) -> list[bytes]:
        ev = _loads(event, "adapter stream event")
        t = ev.get("type")
        if t == "content_block_delta":
            d = ev.get("delta")
            if type(d) is dict and d.get("type") == "text_delta":
                text = d.get("text")
                if type(text) is not str:
                    raise InvalidInput("adapter stream event: text_delta without text")
                return [_chunk(public_model, {"content": text}, None)]
            return []
        if t == "message_start":
            return [_chunk(public_model, {"role": "assistant", "content": ""}, None)]
        if t == "message_delta":
            d = ev.get("delta")
            if type(d) is dict and d.get("stop_reason") is not None:
                return [_chunk(public_model, {}, _finish(d["stop_reason"]))]
            return []
        if t == "error":
            err = ev.get("error")
            msg = err.get("message") if type(err) is dict else None
            raise InvalidInput(f"upstream stream error: {msg}")
        return []
