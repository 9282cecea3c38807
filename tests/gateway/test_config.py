"""Configuration: the YAML file, the zero-config default, and errors that name the field."""

from __future__ import annotations

import pytest

from gateway import config
from gateway.errors import ConfigError
from gateway.stages.auth import hash_key

GOOD = """
model_list:
  - model_name: gpt-4o-mini
    upstream: {kind: openai, base_url: "http://127.0.0.1:9000/v1", model: real-model, api_key_env: UP_KEY}
  - model_name: claude
    upstream: {kind: anthropic, base_url: "http://127.0.0.1:9001"}
keys:
  - {id: team-a, sha256: %s, rpm: 60, tpm: 1000}
  - {id: team-b, sha256: %s}
waf:
  rules: [{id: no-foo, kind: literal, pattern: foo}]
ledger: {dir: led, fsync: always}
background: {queue_size: 5, policy: drop, batch_window_ms: 2}
mode: py
impl: {auth: python}
shell: fastapi
""" % (hash_key("a"), hash_key("b"))  # noqa: UP031 (YAML braces)


def test_yaml_config(tmp_path):
    p = tmp_path / "gw.yaml"
    p.write_text(GOOD)
    c = config.load(str(p), env={"UP_KEY": "sk-up"})
    up, name = c.route("gpt-4o-mini")
    assert (up.kind, up.url, name, up.api_key) == (
        "openai",
        "http://127.0.0.1:9000/v1/chat/completions",
        "real-model",
        "sk-up",
    )
    assert c.route("claude")[0].url == "http://127.0.0.1:9001/v1/messages"
    assert c.route("unknown") is None  # no passthrough
    assert c.ledger_dir == str(tmp_path / "led") and c.fsync == "always"
    assert (c.queue_size, c.queue_policy, c.shell, c.batch_window_ms) == (5, "drop", "fastapi", 2.0)
    assert c.waf_rules[-1]["id"] == "no-foo" and len(c.waf_rules) > 1  # default rules kept
    assert c.keys[0].rpm == 60 and c.keys[1].rpm is None


def test_embedded_default():
    c = config.embedded("http://127.0.0.1:9000", "sk-x", "/tmp/l")
    assert c.route("mock")[1] == "mock" and c.route("any-model")[1] == "any-model"
    assert c.keys[0].sha256 == hash_key("sk-x")


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda s: s.replace("kind: openai", "kind: grpc"), "model_list[0].upstream.kind"),
        (lambda s: s.replace('"http://127.0.0.1:9001"', "nope"), "model_list[1].upstream.base_url"),
        (lambda s: s.replace("rpm: 60", "rpm: -1"), "keys[0].rpm"),
        (lambda s: s.replace("tpm: 1000", ""), "keys[0].tpm"),
        (lambda s: s.replace(hash_key("b"), "abc"), "keys[1].sha256"),
        (lambda s: s.replace("kind: literal", "kind: glob"), "waf.rules[0]"),
        (lambda s: s.replace("fsync: always", "fsync: sometimes"), "ledger.fsync"),
        (lambda s: s.replace("queue_size: 5", "queue_size: 0"), "background.queue_size"),
        (lambda s: s.replace("policy: drop", "policy: maybe"), "background.policy"),
        (lambda s: s.replace("mode: py", "mode: fast"), "mode"),
        (lambda s: s.replace("auth: python", "auth: java"), "impl"),
        (lambda s: s.replace("shell: fastapi", "shell: flask"), "shell"),
        (lambda s: s + "\nserver: gunicorn\n", "server"),
        (lambda s: s + "\nextra_field: 1\n", "extra_field"),
        (
            lambda s: s.replace("api_key_env: UP_KEY", "api_key_env: MISSING_VAR"),
            "model_list[0].upstream.api_key_env",
        ),
    ],
)
def test_invalid_config_names_the_field(tmp_path, mutate, field):
    p = tmp_path / "gw.yaml"
    p.write_text(mutate(GOOD))
    with pytest.raises(ConfigError) as e:
        config.load(str(p), env={"UP_KEY": "k"})
    assert str(e.value).startswith(field), str(e.value)


def test_serve_fails_at_start_with_the_field(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "gw.yaml"
    p.write_text(GOOD.replace("fsync: always", "fsync: sometimes"))
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "serve", "--config", str(p), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "UP_KEY": "k"},
    )
    assert r.returncode == 1 and "ledger.fsync" in r.stderr
