"""The gateway against its OpenAPI description (docs/openapi.yaml), by schemathesis, on the
Python rung and the Rust server at a small budget (harness/api_fuzz.py says what is checked;
`make api-fuzz` runs every rung at a larger one)."""
from __future__ import annotations

import os

import pytest

from harness import api_fuzz

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("GATEWAYLAB_API_FUZZ_EXAMPLES", "10"))


@pytest.mark.parametrize("mode", ["py", "rs-server"])
def test_answers_match_the_openapi_description(mode):
    r = api_fuzz.run_on_rung(mode, EXAMPLES)
    assert r["failures"] == [], "\n".join(r["failures"])
    # it did exercise the gateway: valid requests answered, invalid ones refused
    assert r["cases"] >= 40 and r["by_status"].get("200", 0) > 0 and r["by_status"].get("400", 0) > 0, r


def test_a_wrong_description_is_caught(tmp_path):
    """The checks bite: a description that asks /health for a field it does not serve fails."""
    from gateway.launch import start_gateway
    from harness.native_procs import start_mock

    with open(api_fuzz.SPEC, encoding="utf-8") as f:
        spec = f.read()
    marker = "required: [status, pid, mode, stages, audit_enabled, queue, audit]"
    assert marker in spec
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.replace(marker, marker[:-1] + ", not_served]"))
    with start_mock(seed=2) as mock:
        gw = start_gateway(mock.url, api_fuzz.API_KEY, mode="py", ledger_dir=str(tmp_path / "ledger"))
        try:
            r = api_fuzz.check_gateway(gw.url, 2, spec=str(bad))
        finally:
            gw.stop()
    assert any("GET /health" in f and "not_served" in f for f in r["failures"]), r
