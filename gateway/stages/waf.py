"""WAF stage, Python twin: an ordered rule set of regexes and literals over the prompt text.

Rules are mappings {"id": str, "kind": "regex"|"literal", "pattern": str,
"case_insensitive": bool (default False)}. `scan(text)` returns the id of the first rule in
rule order that matches anywhere in `text`, or None.

Matching semantics (both twins):
  - literal: substring test; with case_insensitive, ASCII letters only fold (A-Z == a-z),
    every other character must match exactly (Rust: aho-corasick's ascii_case_insensitive).
  - regex: Python `re` / Rust `regex` search; case_insensitive = `re.IGNORECASE` / `(?i)`.
    Patterns must use the syntax both engines share: no backreferences, lookaround,
    possessive quantifiers, atomic groups or conditionals (rejected at construction with
    InvalidInput naming the rule), and avoid `\\b`, `\\w`, `\\s`, `\\d` whose Unicode classes
    differ slightly between the engines (the default rules use explicit classes).

Speed (Python twin): rules are tried one by one in order, each a precompiled search; the
ASCII-lowered copy of the text is made once per scan. A regex rule whose pattern starts with
a fixed run of characters (`-----BEGIN `, `[Ii][Gg][Nn]...`) first checks that run in the
lowered text -- a necessary condition, so skipping the search when it is absent never changes
the answer. Python `re` has no
fast path for case-insensitive patterns or leading alternations, so the default rules spell
their first word with explicit classes (`[Ii][Gg]...`) and fold the rest with `(?i:...)`,
which both engines read the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.errors import InvalidInput

_SURROGATE = re.compile("[\ud800-\udfff]").search

# Constructs Python `re` accepts but Rust `regex` does not (or means differently).
_UNSHARED = re.compile(r"\\[1-9]|\(\?[=!]|\(\?<[=!]|\(\?P=|\(\?>|\(\?\(|[*+?}]\+|\\[ZAG]")
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_ASCII_LOWER_STR = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _compile(rule: Mapping) -> tuple[str, str, re.Pattern[str] | str, bool]:
    if not isinstance(rule, Mapping):
        raise InvalidInput(f"Waf: each rule must be a mapping, got {type(rule).__name__}")
    rid, kind, pattern = rule.get("id"), rule.get("kind"), rule.get("pattern")
    ci = rule.get("case_insensitive", False)
    if not isinstance(rid, str) or not rid:
        raise InvalidInput(f"Waf: rule id must be a non-empty str, got {rid!r}")
    if not isinstance(pattern, str) or not pattern:
        raise InvalidInput(f"Waf: rule {rid!r}: pattern must be a non-empty str")
    if not isinstance(ci, bool):
        raise InvalidInput(f"Waf: rule {rid!r}: case_insensitive must be a bool")
    if kind == "literal":
        return rid, kind, (pattern.translate(_ASCII_LOWER_STR) if ci else pattern), ci
    if kind == "regex":
        bad = _UNSHARED.search(pattern)
        if bad:
            raise InvalidInput(f"Waf: rule {rid!r}: {bad.group(0)!r} is not supported by both regex engines")
        try:
            rx = re.compile(pattern, re.IGNORECASE if ci else 0)
        except re.error as e:
            raise InvalidInput(f"Waf: rule {rid!r}: invalid regex: {e}") from None
        return rid, kind, rx, ci
    raise InvalidInput(f"Waf: rule {rid!r}: kind must be 'regex' or 'literal', got {kind!r}")


def _required_prefix(pattern: str, flags: int) -> str | None:
    """The ASCII-lowercased fixed run every match of `pattern` starts with (>= 3 chars), or
    None. Only exact literals and two-case ASCII letter classes count; case-insensitive
    patterns get none (Unicode folding could match characters ASCII lowering does not)."""
    if flags & re.IGNORECASE:
        return None
    try:
        # the regex parser is private and has no stubs (Python >= 3.11 names it re._parser)
        from re import _parser as sre_parse  # type: ignore[attr-defined]
        from re._constants import IN, LITERAL  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - older Pythons
        return None
    try:
        nodes = sre_parse.parse(pattern, flags)
    except Exception:  # pragma: no cover - compile already accepted it
        return None
    out = []
    for op, av in nodes:
        if op is LITERAL:
            out.append(chr(av).translate(_ASCII_LOWER_STR))
        elif op is IN and len(av) == 2 and all(o is LITERAL for o, _ in av):
            a, b = chr(av[0][1]), chr(av[1][1])
            if a.isascii() and a.isalpha() and a.lower() == b.lower() and a != b:
                out.append(a.lower())
            else:
                break
        else:
            break
    return "".join(out) if len(out) >= 3 else None


class Waf:
    __slots__ = ("_rules", "_needs_lower", "ids")

    def __init__(self, rules: Sequence[Mapping]):
        compiled = [_compile(r) for r in rules]
        seen = set()
        for rid, *_ in compiled:
            if rid in seen:
                raise InvalidInput(f"Waf: duplicate rule id {rid!r}")
            seen.add(rid)
        # (id, 0=literal / 1=literal ci / 2=regex, pattern or compiled search, required prefix)
        rules_: list[tuple[str, int, Any, str | None]] = []
        for rid, _kind, rx, ci in compiled:
            if isinstance(rx, re.Pattern):  # kind "regex"
                rules_.append((rid, 2, rx.search, _required_prefix(rx.pattern, rx.flags)))
            else:
                rules_.append((rid, 1 if ci else 0, rx, None))
        self._rules = tuple(rules_)
        self._needs_lower = any(k == 1 or pre for _, k, _, pre in self._rules)
        self.ids = tuple(r[0] for r in compiled)

    def scan(self, text: str) -> str | None:
        if type(text) is not str:
            if not isinstance(text, str):
                raise InvalidInput(f"Waf.scan: text must be str, got {type(text).__name__}")
        if not text.isascii() and _SURROGATE(text) is not None:  # as the Rust twin (differential fuzzing)
            raise InvalidInput("Waf.scan: text is not valid Unicode (a lone surrogate)")
        lowered = text  # read only by the rules that set _needs_lower
        if self._needs_lower:
            # str.lower() is ASCII folding exactly when the text is ASCII (isascii is O(1)).
            lowered = text.lower() if text.isascii() else text.translate(_ASCII_LOWER_STR)
        for rid, kind, pat, pre in self._rules:
            if kind == 2:
                if (pre is None or pre in lowered) and pat(text) is not None:
                    return rid
            elif pat in (lowered if kind == 1 else text):
                return rid
        return None


def _ci(word: str) -> str:
    """`ignore` -> `[Ii][Gg][Nn][Oo][Rr][Ee]`: ASCII case folding spelled out, which Python `re`
    searches far faster than a case-insensitive pattern."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isascii() and c.isalpha() else re.escape(c) for c in word)


def default_rules() -> list[dict]:
    """The shipped rule set: prompt-injection phrases and secrets-like strings."""
    sp = "[ \\t]+"
    return [
        {
            "id": "prompt_injection.ignore_instructions",
            "kind": "regex",
            "case_insensitive": False,
            "pattern": f"{_ci('ignore')}{sp}(?i:(all{sp}|any{sp}|the{sp})?(previous|prior|above|earlier){sp}(instructions|prompts|rules|directions))",
        },
        {
            "id": "prompt_injection.disregard",
            "kind": "regex",
            "case_insensitive": False,
            "pattern": f"{_ci('disregard')}{sp}(?i:(all{sp}|any{sp}|the{sp}|your{sp})?(previous{sp}|prior{sp}|above{sp})?(instructions|rules|guidelines|system{sp}prompt))",
        },
        {
            "id": "prompt_injection.reveal_system_prompt",
            "kind": "regex",
            "case_insensitive": False,
            "pattern": f"{_ci('your')}{sp}(?i:(system|hidden|initial|original){sp}(prompt|instructions))",
        },
        {
            "id": "prompt_injection.dan",
            "kind": "literal",
            "case_insensitive": True,
            "pattern": "do anything now",
        },
        {
            "id": "prompt_injection.developer_mode",
            "kind": "literal",
            "case_insensitive": True,
            "pattern": "developer mode enabled",
        },
        {
            "id": "secret.private_key",
            "kind": "regex",
            "case_insensitive": False,
            "pattern": "-----BEGIN ([A-Z]+ )?PRIVATE KEY-----",
        },
        {
            "id": "secret.aws_access_key_id",
            "kind": "regex",
            "case_insensitive": False,
            "pattern": "(AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}",
        },
        {
            "id": "secret.aws_secret_access_key",
            "kind": "regex",
            "case_insensitive": False,
            "pattern": _ci("aws_secret_access_key") + "[ \\t]*[=:][ \\t]*[A-Za-z0-9/+]{40}",
        },
        {
            "id": "secret.github_token",
            "kind": "regex",
            "case_insensitive": False,
            "pattern": "gh[pousr]_[A-Za-z0-9]{36}",
        },
        {
            "id": "secret.slack_token",
            "kind": "regex",
            "case_insensitive": False,
            "pattern": "xox[abposr]-[0-9A-Za-z-]{10,}",
        },
        {
            "id": "secret.openai_key",
            "kind": "regex",
            "case_insensitive": False,
            "pattern": "sk-(proj-)?[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9_-]{20,}",
        },
    ]
