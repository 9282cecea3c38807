"""WAF twins name the same rule (or none) for every text: the shipped default rules over
random texts with injected rule hits, and random rule sets built from the syntax both
engines share (including the constructs the Rust twin translates: \\s, \\w, \\b, $)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import twins
from gateway.errors import InvalidInput
from gateway.stages.waf import default_rules

PY = twins.load("waf", "python")
RS = twins.load("waf", "rust")
RULES = default_rules()
PY_DEFAULT, RS_DEFAULT = PY(RULES), RS(RULES)


def _hits():
    """A strategy of strings, each matching one default rule (hypothesis.from_regex)."""
    out = []
    for r in RULES:
        if r["kind"] == "literal":
            lit = r["pattern"]
            out.append(st.sampled_from([lit, lit.upper(), lit.title()]))
        else:
            flags = re.IGNORECASE if r["case_insensitive"] else 0
            out.append(st.from_regex(re.compile(r["pattern"], flags), fullmatch=True))
    return st.one_of(out)


# Mostly prompt-like text, with some arbitrary Unicode (combining marks, odd spaces).
words = st.sampled_from(
    [
        "ignore",
        "IGNORE",
        "previous",
        "instructions",
        "your",
        "system",
        "prompt",
        "sk-",
        "AKIA",
        "ghp_",
        "xoxb-",
        "-----BEGIN",
        "PRIVATE KEY-----",
        "do",
        "anything",
        "now",
        "\u0130",
        "\u212a",
        "\u017f",
        "\u0303",
        "\u00a0",
        "\u2028",
        "\x1c",
        "\n",
        "\t",
        " ",
        "é",
    ]
)
texts = st.lists(st.one_of(words, st.text(max_size=12)), max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(pre=texts, hit=_hits(), post=texts, inject=st.booleans())
def test_default_rules_same_verdict(pre, hit, post, inject):
    text = pre + (hit if inject else "") + post
    assert PY_DEFAULT.scan(text) == RS_DEFAULT.scan(text)


@settings(max_examples=30, deadline=None)
@given(hit=_hits(), where=st.floats(0, 1), pad=st.text(alphabet="ab \n\u00e9", min_size=1, max_size=3))
def test_large_texts_detached_path_same_verdict(hit, where, pad):
    body = pad * (6000 // len(pad))
    i = int(len(body) * where)
    text = body[:i] + hit + body[i:]
    assert len(text.encode()) > 4096
    assert PY_DEFAULT.scan(text) == RS_DEFAULT.scan(text) is not None
    assert PY_DEFAULT.scan(body) == RS_DEFAULT.scan(body)


# --- random rule sets ------------------------------------------------------------------
ALPHA = "abcAB \u00e9\u0130\u212a\u017f_1\n"
atom = st.one_of(
    st.sampled_from(list(ALPHA)).map(re.escape),
    st.sampled_from(
        [
            r"\s",
            r"\S",
            r"\w",
            r"\W",
            r"\d",
            r"\D",
            ".",
            "[ab]",
            "[^a ]",
            r"[\w-]",
            r"[\s\d]",
            "[a-c]",
            r"\b",
            r"\B",
            "^",
            "$",
            r"\.",
            "[A-Z]",
            "k",
            "s",
        ]
    ),
)
quant = st.sampled_from(["", "", "", "*", "+", "?", "{1,3}", "*?", "{2}"])


@st.composite
def regex_pattern(draw):
    def seq():
        parts = []
        for a in draw(st.lists(atom, min_size=1, max_size=5)):
            q = draw(quant)
            parts.append(a if a in ("^", "$", r"\b", r"\B") else a + q)
        return "".join(parts)

    alts = [seq() for _ in range(draw(st.integers(1, 3)))]
    p = "|".join(alts)
    if draw(st.booleans()):
        p = "(" + p + ")" + draw(quant)
    if draw(st.booleans()):
        p = "(?i:" + p + ")x?"
    return p


rule = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["regex", "literal"]),
        "case_insensitive": st.booleans(),
    }
).flatmap(
    lambda d: st.fixed_dictionaries(
        {
            "kind": st.just(d["kind"]),
            "case_insensitive": st.just(d["case_insensitive"]),
            "pattern": regex_pattern()
            if d["kind"] == "regex"
            else st.text(alphabet=ALPHA, min_size=1, max_size=4),
        }
    )
)
rule_sets = st.lists(rule, min_size=1, max_size=6).map(
    lambda rs: [dict(r, id=f"r{i}") for i, r in enumerate(rs)]
)
rand_texts = st.text(alphabet=ALPHA + "\x1c\u00a0\u0303\u2460xyz", max_size=40)


@settings(max_examples=500, deadline=None)
@given(rules=rule_sets, samples=st.lists(rand_texts, min_size=1, max_size=8))
def test_random_rule_sets_same_verdict(rules, samples):
    py, rs = PY(rules), RS(rules)
    assert py.ids == rs.ids
    for text in samples:
        assert py.scan(text) == rs.scan(text), (rules, text)


def test_dotted_i_in_whole_pattern_case_insensitive_rules_agree():
    rules = [
        {"id": "r", "kind": "regex", "case_insensitive": True, "pattern": "a*[A-Z]a*"},
        {"id": "s", "kind": "regex", "case_insensitive": True, "pattern": "aa|a\u0130"},
    ]
    for text in ("\u0130", "\u0131", "A\u0130", "ai"):
        assert PY(rules).scan(text) == RS(rules).scan(text), text


def test_dotted_i_in_inline_case_insensitive_group_agrees():
    """Found by the random rule sets: İ/ı against an inline (?i:...) group in a case-sensitive
    pattern (the default rules have such groups). The Rust translator now tracks the
    case-insensitive scope and spells i, I, İ, ı as one class inside it."""
    rules = [
        {"id": "r0", "kind": "regex", "case_insensitive": False, "pattern": "(?i:[A-Z])x?"},
        {"id": "r1", "kind": "regex", "case_insensitive": False, "pattern": "(?i:a)\u0130"},
        {"id": "r2", "kind": "regex", "case_insensitive": True, "pattern": "(?-i:[i])z"},
        {"id": "r3", "kind": "regex", "case_insensitive": True, "pattern": "(?P<id>i)q"},
        {"id": "r4", "kind": "regex", "case_insensitive": True, "pattern": "[^h-j\\d]w"},
    ]
    for text in (
        "\u0130",
        "\u0131",
        "A\u0130X",
        "Ai",
        "a\u0131",
        "iZ",
        "\u0130z",
        "Iz",
        "\u0131Q",
        "\u0130w",
        "kw",
        "1w",
    ):
        assert PY(rules).scan(text) == RS(rules).scan(text), text
        for r in rules:
            assert PY([r]).scan(text) == RS([r]).scan(text), (r, text)


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a)\1",
        r"a(?=b)",
        r"a(?!b)",
        r"(?<=a)b",
        r"(?<!a)b",
        r"(?P<x>a)(?P=x)",
        r"(?>a)",
        r"a++",
        r"a*+",
        r"(a)?(?(1)b|c)",
        r"\Z",
        r"\A",
        "(",
        "[a",
        "a{2,1}",
    ],
)
def test_unsupported_or_invalid_patterns_are_invalid_input_in_both(pattern):
    rules = [{"id": "r", "kind": "regex", "pattern": pattern}]
    for impl in (PY, RS):
        with pytest.raises(InvalidInput):
            impl(rules)


@pytest.mark.parametrize(
    "rules",
    [
        [{"id": "", "kind": "regex", "pattern": "a"}],
        [{"id": "r", "kind": "glob", "pattern": "a"}],
        [{"id": "r", "kind": "literal", "pattern": ""}],
        [{"id": "r", "kind": "literal", "pattern": "a", "case_insensitive": "yes"}],
        [{"id": "r", "kind": "literal", "pattern": "a"}, {"id": "r", "kind": "literal", "pattern": "b"}],
        ["not a mapping"],
    ],
)
def test_bad_rules_are_invalid_input_in_both(rules):
    for impl in (PY, RS):
        with pytest.raises(InvalidInput):
            impl(rules)


def test_scan_needs_str_in_both():
    for w in (PY_DEFAULT, RS_DEFAULT):
        with pytest.raises(InvalidInput):
            w.scan(b"bytes")


def test_rust_twin_releases_the_gil_only_for_large_texts(native):
    def detached():
        return native.gil_stats().get("waf.scan", {}).get("detached_ns", 0)

    before = detached()
    RS_DEFAULT.scan("short prompt " * 10)
    assert detached() == before
    RS_DEFAULT.scan("a long prompt " * 400)  # > 4 KiB
    assert detached() > before
