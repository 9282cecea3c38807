import pytest

from gateway import twins
from gateway.errors import ConfigError, RustTwinUnavailable
from gateway.twins import Switches


def test_mode_sets_every_component():
    assert set(Switches("py").as_dict().values()) == {"python"}
    assert set(Switches("py+rs").as_dict().values()) == {"rust"}


def test_override_one_component():
    s = Switches("py+rs", {"mmr": "python"})
    assert s.impl("mmr") == "python" and s.impl("wal") == "rust"
    assert s.label() == "py+rs[mmr=python]"


def test_env_then_args():
    env = {"GATEWAYLAB_MODE": "py+rs", "GATEWAYLAB_IMPL": "mmr=python,wal=python"}
    s = Switches.resolve(env=env)
    assert s.mode == "py+rs" and s.impl("mmr") == "python" and s.impl("hash") == "rust"
    s = Switches.resolve(mode="py", impl=["wal=rust"], env=env)
    assert s.mode == "py" and s.impl("wal") == "rust" and s.impl("mmr") == "python"


@pytest.mark.parametrize("bad", ["mmr", "nope=rust", "mmr=go"])
def test_bad_overrides_name_the_problem(bad):
    with pytest.raises(ConfigError, match=bad.split("=")[0]):
        twins.parse_impl(bad)


def test_bad_mode():
    with pytest.raises(ConfigError, match="mode"):
        Switches("rust")


def test_missing_extension_is_a_clear_error(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "gateway._native":
            raise ImportError("simulated: not built")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(RustTwinUnavailable, match="make dev"):
        twins.load("mmr", "rust")


def test_build_profile_is_release(native):
    assert native.build_profile == "release"


def test_panic_becomes_python_exception(native):
    from gateway.errors import NativePanic

    with pytest.raises(NativePanic, match="boom"):
        native._debug_panic("boom")
    assert native.gil_stats()["_debug_panic"]["calls"] >= 1
