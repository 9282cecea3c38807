"""Malformed and ambiguous HTTP/1.x framing, as data, plus a raw-socket runner.

Every case is one request sent over a fresh TCP connection to a gateway whose upstream is a
counting mock. The classes follow RFC 9112 (§2 message format, §3 request line, §5 field
syntax, §6 message body, §7 chunked coding) and the PortSwigger request-smuggling research
(CL.TE / TE.CL / TE.TE obfuscation, chunk-size and chunk-extension tricks).

Bad cases are POSTs to /v1/chat/completions with a valid key and a valid chat body, so a
server that let one through would forward it (the mock's count shows it). What must hold
for each bad case:
  - the answer is one of `expect` (a 4xx; 505 for an unsupported version) with an
    OpenAI-shaped body (or, for the statuses in BARE, the server's own empty one) — or, when the case is `incomplete` (the request never ends), the
    connection closes with no status;
  - the upstream sees nothing;
  - at most one response comes back (never two: the bytes were not split into two requests);
  - a good request on a new connection still gets 200.
Control cases (`expect={200}`) are valid and must be forwarded exactly once; they keep the
runner honest.

The runner knows nothing about the gateway beyond a host/port, a key and a function that
counts upstream requests, so another server (rs-server) can run the same corpus:

    from framing_cases import CASES, run_case
    outcome = run_case("127.0.0.1", port, case, key="sk-...")   # -> Outcome
    problems = outcome.problems(case, forwarded=upstream_delta)
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import time

BODY = b'{"model":"mock","messages":[{"role":"user","content":"framing"}],"max_tokens":4}'
PATH = b"/v1/chat/completions"
AUTH = b"{AUTH}"  # replaced by the runner with "Bearer <key>"


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    expect: frozenset  # acceptable status codes
    ref: str  # where the rule comes from
    incomplete: bool = False  # the request never ends: a close with no status is right too
    forwards: frozenset = frozenset({0})  # upstream requests the case may cause (controls: {1})


@dataclasses.dataclass(frozen=True)
class Limit:
    """What one server does instead of the case's expectation, when neither a setting nor a
    check in front can change it (docs/reliability.md lists them). Still tested: the answer
    must be one of `expect`, the upstream count one of `forwards`, never two responses, and
    with `closes` the connection must be closed after the answer."""

    expect: frozenset
    forwards: frozenset
    why: str
    closes: bool = False
    silent_close: bool = False  # a close with no status is this server's answer


def _head(
    *lines: bytes,
    method: bytes = b"POST",
    target: bytes = PATH,
    version: bytes = b"HTTP/1.1",
    host: bool = True,
    auth: bool = True,
) -> bytes:
    out = [method + b" " + target + b" " + version]
    if host:
        out.append(b"Host: gateway")
    if auth:
        out.append(b"Authorization: " + AUTH)
    out.append(b"Content-Type: application/json")
    out.extend(lines)
    return b"\r\n".join(out) + b"\r\n\r\n"


def _cl(n: int | None = None) -> bytes:
    return b"Content-Length: " + str(len(BODY) if n is None else n).encode()


def _chunked(body: bytes = BODY) -> bytes:
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


ONE = frozenset({1})
BAD = frozenset({400})
BAD_OR_413 = frozenset({400, 413})
TOO_LARGE = frozenset({400, 413, 414, 431})
HEADERS_TOO_LARGE = frozenset({431})  # RFC 6585 §5, on every rung and server
VERSION = frozenset({505})
REFUSED = frozenset(range(400, 500))  # any 4xx: the exact code is the server's
OK = frozenset({200})
TE = b"Transfer-Encoding: chunked"

CASES: list[Case] = [
    # --- controls: valid framing, forwarded once --------------------------------------
    Case("control_content_length", _head(_cl()) + BODY, OK, "RFC 9112 §6.2", forwards=ONE),
    Case("control_chunked", _head(TE) + _chunked(), OK, "RFC 9112 §7.1", forwards=ONE),
    Case(
        "control_chunk_extension",
        _head(TE) + b"%x;name=value\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
        OK,
        "RFC 9112 §7.1.1 (extensions are valid and ignored)",
        forwards=ONE,
    ),
    # --- CL.TE / TE.CL conflicts and TE obfuscation ----------------------------------
    Case("cl_then_te", _head(_cl(), TE) + _chunked(), BAD, "RFC 9112 §6.3 ¶3; PortSwigger CL.TE"),
    Case("te_then_cl", _head(TE, _cl(4)) + _chunked(), BAD, "RFC 9112 §6.3 ¶3; PortSwigger TE.CL"),
    Case(
        "te_space_before_colon",
        _head(b"Transfer-Encoding : chunked", _cl()) + BODY,
        BAD,
        "RFC 9112 §5.1 (whitespace before the colon: MUST 400); PortSwigger TE.TE",
    ),
    Case("te_xchunked", _head(b"Transfer-Encoding: xchunked", _cl()) + BODY, BAD, "PortSwigger TE.TE"),
    Case("te_tab_value", _head(b"Transfer-Encoding:\tchunked", _cl()) + _chunked(), BAD, "PortSwigger TE.TE"),
    Case("te_vtab_value", _head(b"Transfer-Encoding: \x0bchunked", _cl()) + BODY, BAD, "PortSwigger TE.TE"),
    Case("te_twice", _head(TE, b"Transfer-Encoding: identity") + _chunked(), BAD, "PortSwigger TE.TE"),
    Case(
        "te_chunked_identity",
        _head(b"Transfer-Encoding: chunked, identity") + _chunked(),
        BAD,
        "RFC 9112 §6.3 ¶4 (chunked must be final)",
    ),
    Case(
        "te_identity_chunked",
        _head(b"Transfer-Encoding: identity, chunked") + _chunked(),
        REFUSED,
        "RFC 9112 §6.1 (identity is not a coding); gateway policy: exactly chunked",
    ),
    Case(
        "te_obs_fold",
        _head(b"Transfer-Encoding:", b" chunked", _cl()) + _chunked(),
        BAD,
        "RFC 9112 §5.2 (obs-fold: 400 or replace with SP) + §6.3",
    ),
    Case(
        "te_uppercase_with_cl",
        _head(b"Transfer-Encoding: CHUNKED", _cl()) + _chunked(),
        BAD,
        "RFC 9112 §6.3 ¶3",
    ),
    Case(
        "te_http10",
        _head(TE, version=b"HTTP/1.0") + _chunked(),
        BAD,
        "RFC 9112 §6.1 (HTTP/1.0 with Transfer-Encoding: faulty framing)",
    ),
    Case("te_http10_with_cl", _head(TE, _cl(), version=b"HTTP/1.0") + _chunked(), BAD, "RFC 9112 §6.1"),
    # --- Content-Length grammar -------------------------------------------------------
    Case("cl_twice_different", _head(_cl(), _cl(len(BODY) - 1)) + BODY, BAD, "RFC 9112 §6.3 ¶5"),
    Case("cl_twice_same", _head(_cl(), _cl()) + BODY, BAD, "RFC 9110 §8.6 (gateway policy: refuse the list)"),
    Case(
        "cl_comma_list",
        _head(b"Content-Length: %d, %d" % (len(BODY), len(BODY))) + BODY,
        BAD,
        "RFC 9110 §8.6",
    ),
    Case("cl_plus", _head(b"Content-Length: +%d" % len(BODY)) + BODY, BAD, "RFC 9110 §8.6 (1*DIGIT)"),
    Case("cl_negative", _head(b"Content-Length: -1") + BODY, BAD, "RFC 9110 §8.6"),
    Case("cl_hex", _head(b"Content-Length: 0x%x" % len(BODY)) + BODY, BAD, "RFC 9110 §8.6"),
    Case("cl_inner_space", _head(b"Content-Length: 1 0") + BODY, BAD, "RFC 9110 §8.6"),
    Case(
        "cl_overflow",
        _head(b"Content-Length: 99999999999999999999999999") + BODY,
        BAD_OR_413,
        "RFC 9112 §6.3 ¶5 (integer overflow)",
    ),
    Case(
        "cl_longer_than_body",
        _head(_cl(len(BODY) + 50)) + BODY,
        REFUSED,
        "RFC 9112 §6.3 ¶7 (incomplete)",
        incomplete=True,
    ),
    # --- chunked coding ----------------------------------------------------------------
    Case(
        "chunk_size_overflow",
        _head(TE) + b"ffffffffffffffffffff1\r\n" + BODY + b"\r\n0\r\n\r\n",
        BAD_OR_413,
        "RFC 9112 §7.1 (chunk-size overflow)",
    ),
    Case(
        "chunk_size_negative",
        _head(TE) + b"-1\r\n" + BODY + b"\r\n0\r\n\r\n",
        BAD,
        "RFC 9112 §7.1 (1*HEXDIG)",
    ),
    Case(
        "chunk_size_0x", _head(TE) + b"0x%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n", BAD, "RFC 9112 §7.1"
    ),
    Case(
        "chunk_size_space",
        _head(TE) + b"%x \r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
        BAD,
        "RFC 9112 §7.1 (no whitespace after chunk-size; PortSwigger chunk tricks)",
    ),
    Case(
        "chunk_size_bare_lf",
        _head(TE) + b"%x\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
        BAD,
        "RFC 9112 §7.1 (CRLF); PortSwigger TE.0 / chunk LF",
    ),
    Case(
        "chunk_data_too_long",
        _head(TE) + b"5\r\n" + BODY + b"\r\n0\r\n\r\n",
        BAD,
        "RFC 9112 §7.1 (chunk-data then CRLF)",
    ),
    Case(
        "chunk_ext_bare_cr",
        _head(TE) + b"%x;a=b\rc\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
        BAD,
        "RFC 9112 §2.2 (bare CR) / §7.1.1",
    ),
    Case(
        "chunk_ext_ctl",
        _head(TE) + b"%x;a=\x01\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
        BAD,
        "RFC 9112 §7.1.1 (chunk-ext grammar)",
    ),
    Case(
        "chunk_no_last_chunk",
        _head(TE) + b"%x\r\n" % len(BODY) + BODY + b"\r\n",
        REFUSED,
        "RFC 9112 §7.1 (incomplete)",
        incomplete=True,
    ),
    Case(
        "chunk_trailer_bad_field",
        _head(TE) + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nX-T\x00: a\r\n\r\n",
        BAD,
        "RFC 9112 §7.1.2 (trailer fields have field syntax)",
    ),
    # --- request line and version -------------------------------------------------------
    Case("version_2_0", _head(_cl(), version=b"HTTP/2.0") + BODY, VERSION, "RFC 9110 §15.6.6 (505)"),
    Case("version_3_0", _head(_cl(), version=b"HTTP/3.0") + BODY, VERSION, "RFC 9110 §15.6.6 (505)"),
    Case(
        "version_lowercase", _head(_cl(), version=b"http/1.1") + BODY, BAD, "RFC 9112 §2.3 (case-sensitive)"
    ),
    Case(
        "version_two_digit_minor",
        _head(_cl(), version=b"HTTP/1.10") + BODY,
        BAD,
        "RFC 9112 §2.3 (DIGIT.DIGIT)",
    ),
    Case(
        "version_missing",
        b"POST " + PATH + b"\r\nHost: g\r\nAuthorization: {AUTH}\r\n" + _cl() + b"\r\n\r\n" + BODY,
        BAD | VERSION,
        "RFC 9112 §3 (HTTP/0.9 simple request)",
        incomplete=True,
    ),
    Case(
        "host_empty",
        _head(b"Host:", _cl(), host=False) + BODY,
        BAD,
        "RFC 9112 §3.2 (an http URI has an authority)",
    ),
    Case(
        "h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", VERSION | BAD, "RFC 9113 §3.4 on an HTTP/1.1 port"
    ),
    Case(
        "request_line_extra_space",
        b"POST  " + PATH + b" HTTP/1.1\r\n" + _head(_cl()).split(b"\r\n", 1)[1] + BODY,
        BAD,
        "RFC 9112 §3 (single SP)",
    ),
    Case("method_lowercase", _head(_cl(), method=b"post") + BODY, REFUSED, "RFC 9110 §9.1 (case-sensitive)"),
    Case(
        "target_absolute_form",
        _head(_cl(), target=b"http://evil.example" + PATH) + BODY,
        OK | REFUSED,
        "RFC 9112 §3.2.2 (a server MUST accept absolute-form; routing is by model, not host)",
        forwards=frozenset({0, 1}),
    ),
    Case(
        "target_authority_form",
        _head(method=b"CONNECT", target=b"evil.example:443"),
        REFUSED,
        "RFC 9112 §3.2.3 (CONNECT)",
    ),
    Case("target_asterisk", _head(method=b"OPTIONS", target=b"*"), REFUSED, "RFC 9112 §3.2.4"),
    Case(
        "target_fragment",
        _head(_cl(), target=PATH + b"#frag") + BODY,
        BAD | OK,
        "RFC 9112 §3.2 (no fragment); servers drop it from the path, no framing consequence",
        forwards=frozenset({0, 1}),
    ),
    Case("target_raw_space", _head(_cl(), target=b"/v1/chat /completions") + BODY, BAD, "RFC 9112 §3"),
    Case(
        "target_non_ascii",
        _head(_cl(), target=PATH + b"\xc3\xa9") + BODY,
        REFUSED,
        "RFC 3986 (no raw octets)",
    ),
    # --- bare CR / LF, NUL, field grammar ----------------------------------------------
    Case("field_bare_cr_in_value", _head(b"X-A: a\rb", _cl()) + BODY, BAD, "RFC 9112 §2.2 (bare CR: reject)"),
    Case("field_bare_cr_line_end", _head(b"X-A: a\r" + _cl()) + BODY, BAD, "RFC 9112 §2.2"),
    Case("field_nul_in_value", _head(b"X-A: a\x00b", _cl()) + BODY, BAD, "RFC 9110 §5.5"),
    Case("field_del_in_value", _head(b"X-A: a\x7fb", _cl()) + BODY, BAD, "RFC 9110 §5.5"),
    Case("field_name_space", _head(b"Content Length: 5", _cl()) + BODY, BAD, "RFC 9110 §5.1 (token)"),
    Case(
        "cl_space_before_colon",
        _head(b"Content-Length : %d" % len(BODY)) + BODY,
        BAD,
        "RFC 9112 §5.1 (MUST 400)",
    ),
    Case("field_empty_name", _head(b": x", _cl()) + BODY, BAD, "RFC 9110 §5.1"),
    Case("field_name_paren", _head(b"X(A): 1", _cl()) + BODY, BAD, "RFC 9110 §5.1 (token)"),
    Case("field_name_non_ascii", _head(b"X\xc3\xa9: 1", _cl()) + BODY, BAD, "RFC 9110 §5.1 (token)"),
    Case("field_no_colon", _head(b"NoColonHere", _cl()) + BODY, BAD, "RFC 9112 §5"),
    Case("field_obs_fold", _head(b"X-A: a", b" folded", _cl()) + BODY, BAD, "RFC 9112 §5.2 (400 or SP)"),
    Case("host_missing", _head(_cl(), host=False) + BODY, BAD, "RFC 9112 §3.2 (MUST 400)"),
    Case("host_twice", _head(b"Host: other", _cl()) + BODY, BAD, "RFC 9112 §3.2 (MUST 400)"),
    # --- upgrades (never switch protocols) -----------------------------------------------
    Case(
        "upgrade_h2c",
        _head(
            b"Connection: Upgrade, HTTP2-Settings",
            b"Upgrade: h2c",
            b"HTTP2-Settings: AAMAAABkAAQAAP__",
            _cl(),
        )
        + BODY,
        OK | REFUSED,
        "RFC 9113 §3.1 (h2c is obsolete; ignore or refuse, never 101)",
        forwards=frozenset({0, 1}),
    ),
    Case(
        "upgrade_websocket",
        _head(
            b"Connection: Upgrade",
            b"Upgrade: websocket",
            b"Sec-WebSocket-Version: 13",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            method=b"GET",
            target=b"/v1/models",
        ),
        OK | REFUSED,
        "RFC 6455 (the gateway speaks no WebSocket: never 101)",
    ),
    # --- chunk extensions and trailers: capped at 16 KiB each (hyper's caps; Node.js
    # capped extensions for CVE-2024-22019), trailer fields never read as headers ----------
    Case(
        "control_chunk_ext_under_cap",
        _head(TE) + b"%x;e=" % len(BODY) + b"x" * 15000 + b"\r\n" + BODY + b"\r\n0\r\n\r\n",
        OK,
        "15 KB of chunk extensions: under the 16 KiB cap",
        forwards=ONE,
    ),
    Case(
        "control_trailer",
        _head(TE) + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nX-Checksum: abc\r\n\r\n",
        OK,
        "RFC 9112 §7.1.2 (a trailer field; ignored)",
        forwards=ONE,
    ),
    Case(
        "chunk_ext_100k",
        _head(TE) + b"%x;e=" % len(BODY) + b"x" * 100_000 + b"\r\n" + BODY + b"\r\n0\r\n\r\n",
        BAD,
        "RFC 9112 §7.1.1; CVE-2024-22019 (unbounded chunk extensions)",
    ),
    Case(
        "chunk_ext_over_many_chunks",
        _head(TE)
        + b"".join(b"1;e=" + b"x" * 1000 + b"\r\n" + BODY[i : i + 1] + b"\r\n" for i in range(len(BODY)))
        + b"0\r\n\r\n",
        BAD,
        "CVE-2024-22019 (the cap is per request, not per chunk)",
    ),
    Case(
        "chunk_ext_after_data",
        _head(TE) + b"%x\r\n" % len(BODY) + BODY + b"\r\n1;e=" + b"x" * 100_000 + b"\r\n \r\n0\r\n\r\n",
        BAD,
        "CVE-2024-22019 (a complete JSON body before the oversized chunk is not forwarded)",
    ),
    Case(
        "trailer_100k",
        _head(TE) + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nX-T: " + b"a" * 100_000 + b"\r\n\r\n",
        BAD,
        "RFC 9112 §7.1.2; trailer section over the 16 KiB cap",
    ),
    Case(
        "trailer_fields_5000",
        _head(TE)
        + b"%x\r\n" % len(BODY)
        + BODY
        + b"\r\n0\r\n"
        + b"".join(b"X-T%d: a\r\n" % i for i in range(5000))
        + b"\r\n",
        BAD,
        "RFC 9112 §7.1.2; more trailer fields than the 100 allowed",
    ),
    Case(
        "trailer_authorization",
        _head(TE, auth=False) + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nAuthorization: {AUTH}\r\n\r\n",
        frozenset({401}),
        "RFC 9110 §6.5.1 (a trailer field is not a header field: no key, 401)",
    ),
    # --- header count and size: 431 headers_too_large (RFC 6585 §5) -------------------
    Case(
        "headers_many",
        _head(*[b"X-H%d: v" % i for i in range(2000)], _cl()) + BODY,
        HEADERS_TOO_LARGE,
        "RFC 6585 §5 (431); gateway limit max_header_bytes",
    ),
    Case(
        "headers_5000",
        _head(*[b"X-H%d: v" % i for i in range(5000)], _cl()) + BODY,
        HEADERS_TOO_LARGE,
        "RFC 6585 §5 (431): 5,000 header lines",
    ),
    Case(
        "headers_over_field_limit",
        _head(*[b"X-H%d: v" % i for i in range(120)], _cl()) + BODY,
        HEADERS_TOO_LARGE,
        "RFC 6585 §5 (431): over 100 header fields, a small head",
    ),
    Case(
        "header_huge_value",
        _head(b"X-Big: " + b"a" * 70000, _cl()) + BODY,
        HEADERS_TOO_LARGE,
        "RFC 6585 §5 (431): a 70 KB header line",
    ),
    Case(
        "header_value_over_guard_limit",
        _head(b"X-Big: " + b"a" * 20000, _cl()) + BODY,
        HEADERS_TOO_LARGE,
        "RFC 6585 §5 (431): over limits.max_header_bytes, under every server's buffer",
    ),
    Case(
        "target_huge",
        _head(_cl(), target=PATH + b"?q=" + b"a" * 70000) + BODY,
        TOO_LARGE,
        "RFC 9112 §3 (414)",
    ),
]

_HYPER_CLTE = Limit(
    OK,
    ONE,
    "granian (hyper) frames a request with both Content-Length and Transfer-Encoding "
    "by the chunked coding and closes the connection after answering, as RFC 9112 §6.3 allows; "
    "it drops Content-Length before the ASGI scope, so the guard cannot see the conflict",
    closes=True,
)
_PARSER_VERSION = "the server's HTTP/1 parser refuses the request line before the gateway runs, with 400"

# Statuses a server answers by itself, with an empty body, for bytes its parser refuses before
# any gateway code runs. granian (hyper): a head it cannot parse (400), a target over its
# buffer (414), more than 100 header fields (431). rs-server: what `raw_head_check` does not
# look at and hyper refuses (400: Content-Length grammar, two Transfer-Encodings, request-line
# spacing and version grammar). The status is every rung's; only the body is not OpenAI-shaped
# (docs/reliability.md). Every other refusal must be OpenAI-shaped.
BARE: dict[str, frozenset] = {"granian": frozenset({400, 414, 431}), "rs-server": frozenset({400})}

# (server, case name) -> what that server does instead; see Limit and docs/reliability.md.
LIMITS: dict[tuple[str, str], Limit] = {
    ("granian", "cl_then_te"): _HYPER_CLTE,
    ("granian", "te_then_cl"): _HYPER_CLTE,
    ("granian", "te_tab_value"): _HYPER_CLTE,
    ("granian", "te_uppercase_with_cl"): _HYPER_CLTE,
    ("granian", "cl_twice_same"): Limit(
        OK,
        ONE,
        "granian (hyper) folds identical Content-Length values into one, "
        "as RFC 9110 §8.6 allows; the ASGI scope shows a single header",
    ),
    ("rs-server", "chunk_size_space"): Limit(
        OK,
        ONE,
        "hyper (rs-server's HTTP layer) accepts whitespace after the chunk "
        "size; the gateway is the only parser of the stream, so no second "
        "reading disagrees",
    ),
    ("rs-server", "chunk_ext_ctl"): Limit(
        OK, ONE, "hyper skips chunk extensions without checking their grammar (they are ignored either way)"
    ),
    ("granian", "chunk_size_space"): Limit(
        OK,
        ONE,
        "hyper accepts whitespace after the chunk size; the gateway is "
        "the only parser of the stream, so no second reading disagrees",
    ),
    ("granian", "chunk_ext_ctl"): Limit(
        OK, ONE, "hyper skips chunk extensions without checking their grammar (they are ignored either way)"
    ),
    ("granian", "version_2_0"): Limit(
        BAD, frozenset({0}), _PARSER_VERSION + " (an empty body, not OpenAI-shaped)"
    ),
    ("granian", "version_3_0"): Limit(
        BAD, frozenset({0}), _PARSER_VERSION + " (an empty body, not OpenAI-shaped)"
    ),
    ("granian", "h2_preface"): Limit(
        frozenset(),
        frozenset({0}),
        "granian in HTTP/1-only mode closes the connection on an HTTP/2 preface without a status",
        silent_close=True,
    ),
    ("uvicorn", "version_3_0"): Limit(
        BAD,
        frozenset({0}),
        _PARSER_VERSION + " (httptools: 'invalid HTTP version'; "
        "HTTP/0.9 and 2.0 reach the gateway, which answers 505)",
    ),
    ("uvicorn", "request_line_extra_space"): Limit(
        OK,
        ONE,
        "httptools (llhttp) accepts several spaces between "
        "method and target; the request is read once, no framing consequence",
    ),
}


@dataclasses.dataclass
class Outcome:
    statuses: list  # status codes of every response read, in order
    closed: bool  # the server closed the connection
    hung: bool  # neither an answer nor a close within the time allowed
    raw: bytes

    def problems(
        self, case: Case, forwarded: int, limit: Limit | None = None, bare: frozenset = frozenset()
    ) -> list[str]:
        """What went wrong; `bare`: statuses this server may answer with an empty body (BARE)."""
        out = []
        expect, forwards = (limit.expect, limit.forwards) if limit else (case.expect, case.forwards)
        if forwarded not in forwards:
            out.append(f"upstream saw {forwarded} request(s), expected {sorted(forwards)}")
        if (
            limit is not None
            and limit.closes
            and not self.closed
            and b"connection: close" not in self.raw.lower()
        ):
            out.append("the connection stayed open after an ambiguous request")
        if len(self.statuses) > 1:
            out.append(f"{len(self.statuses)} responses {self.statuses}: the request was split")
        if self.hung:
            out.append("no answer and no close (hang)")
        elif not self.statuses:
            if not case.incomplete and not (limit is not None and limit.silent_close):
                out.append("closed with no status")
        elif self.statuses[0] not in expect:
            out.append(f"status {self.statuses[0]}, expected one of {sorted(expect)}")
        if 101 in self.statuses:
            out.append("switched protocols (101)")
        body = _first_body(self.raw)
        if self.statuses and self.statuses[0] >= 400 and not (self.statuses[0] in bare and not body):
            try:
                err = json.loads(body)["error"]
                shaped = all(isinstance(err.get(k), str) for k in ("message", "type", "code"))
            except (ValueError, KeyError, TypeError, AttributeError):
                shaped = False
            if not shaped:
                out.append(f"status {self.statuses[0]} without an OpenAI-shaped body: {body[:120]!r}")
        return out


def _first_body(data: bytes) -> bytes:
    """The body of the first response in `data` (Content-Length framed, else up to the close)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return b""
    cl = re.search(rb"\r\ncontent-length: *(\d+)", data[:end].lower())
    return data[end + 4 : end + 4 + int(cl.group(1))] if cl else data[end + 4 :]


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


def _parse_responses(data: bytes) -> list[int]:
    """Status codes of the responses in `data` (Content-Length or close-delimited bodies)."""
    out, pos = [], 0
    while pos < len(data):
        m = _STATUS.match(data, pos)
        if not m:
            break
        out.append(int(m.group(1)))
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        head = data[pos:end].lower()
        cl = re.search(rb"\r\ncontent-length: *(\d+)", head)
        if cl:
            pos = end + 4 + int(cl.group(1))
        elif b"transfer-encoding: chunked" in head:
            # walk the chunks
            p = end + 4
            while True:
                nl = data.find(b"\r\n", p)
                if nl < 0:
                    return out
                size = int(data[p:nl].split(b";")[0] or b"0", 16)
                p = nl + 2 + size + 2
                if size == 0:
                    break
            pos = p
        else:
            break  # close-delimited
    return out


def run_case(
    host: str, port: int, case: Case, key: str, quiet_s: float = 1.5, close_s: float = 5.0
) -> Outcome:
    """Send `case` on a new connection; read until the server closes or goes quiet. A server
    still silent after `quiet_s` gets our write side shut (the request will never finish),
    then has `close_s` to answer or close."""
    raw = case.raw.replace(AUTH, b"Bearer " + key.encode())
    data = b""
    closed = hung = False
    with socket.create_connection((host, port), timeout=5) as s:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may refuse and close before reading it all
        shut = False
        deadline = time.monotonic() + quiet_s
        while True:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if data and _complete(data):
                    break  # answered; keep-alive connection left open
                if shut:
                    hung = not data
                    break
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                shut = True
                deadline = time.monotonic() + close_s
                continue
            except (ConnectionResetError, OSError):
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
            if _complete(data):
                deadline = time.monotonic() + 0.2  # a second response would follow at once
    return Outcome(_parse_responses(data), closed, hung, data)


def _complete(data: bytes) -> bool:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    cl = re.search(rb"\r\ncontent-length: *(\d+)", data[:end].lower())
    return bool(cl) and len(data) >= end + 4 + int(cl.group(1))


GOOD = _head(_cl()) + BODY


def good_request(host: str, port: int, key: str) -> int | None:
    """Status of one valid chat request on a new connection (None: no answer)."""
    o = run_case(host, port, Case("good", GOOD, OK, "", forwards=ONE), key)
    return o.statuses[0] if o.statuses else None
