"""The gateway against its OpenAPI description (docs/openapi.yaml), by schemathesis, on the
Python rung and the Rust server at a small budget (harness/infra/api_fuzz.py says what is checked;
`make api-fuzz` runs every rung at a larger one)."""

from __future__ import annotations

import os

import pytest

from harness.infra import api_fuzz
from tests.reliability.rungs import RUNGS

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
    from gateway.serving.launch import start_gateway
    from harness.infra.native_procs import start_mock

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


@pytest.mark.parametrize("mode", RUNGS)
def test_proof_indexes_beyond_64_bits_are_out_of_range_not_500(mode, tmp_path):
    """Found by `make api-fuzz` on rs-core: /audit/proof/83166546515535157264384 overflowed the
        binding's i64 and answered a plain-text 500; every rung answers 404 / 400 out of range (and
    400 invalid_index for a signed one: an index is digits only)."""
    import json
    import urllib.error
    import urllib.request

    from gateway.serving.launch import start_gateway
    from harness.infra.native_procs import start_mock

    with start_mock(seed=3) as mock:
        gw = start_gateway(mock.url, api_fuzz.API_KEY, mode=mode, ledger_dir=str(tmp_path / "ledger"))
        try:
            for path, status, code in [
                ("/audit/proof/83166546515535157264384", 404, "index_out_of_range"),
                ("/audit/proof/-99999999999999999999", 400, "invalid_index"),
                ("/audit/consistency?old=99999999999999999999", 400, "old_out_of_range"),
            ]:
                with pytest.raises(urllib.error.HTTPError) as e:
                    urllib.request.urlopen(gw.url + path, timeout=5)
                assert e.value.code == status, path
                assert json.loads(e.value.read())["error"]["code"] == code, path
        finally:
            gw.stop()
