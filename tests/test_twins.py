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


def _is_native(obj) -> bool:
    """Compiled code of gateway._native: a builtin function or a class defined by the
    extension (neither has Python bytecode behind it)."""
    import inspect

    rs = twins.native()
    if inspect.isbuiltin(obj):
        return getattr(rs, obj.__name__, None) is obj
    if inspect.isclass(obj):
        return getattr(rs, obj.__name__, None) is obj and not any(
            inspect.isfunction(v) for v in vars(obj).values()
        )
    return False


@pytest.mark.parametrize("component", twins.COMPONENTS)
def test_every_rust_twin_is_native_code(component):
    """The parity tests compare the two entries of the registry. A Rust entry that pointed at
    a Python object would make them compare Python with Python and pass; this cannot."""
    import inspect

    py, rs = twins.load(component, "python"), twins.load(component, "rust")
    assert py is not rs
    assert not _is_native(py), f"{component}: the Python twin is native code"
    if _is_native(rs):
        return
    # the one Python wrapper (the forwarder's awaitable) must hold a native object and add no logic
    assert component == "forwarder", f"{component}: the Rust twin {rs!r} is not from gateway._native"
    fwd = rs()
    try:
        assert _is_native(type(fwd._native)), type(fwd._native)
        assert inspect.getmodule(rs).__name__ == "gateway.stages.rust_forwarder"
    finally:
        fwd._native.close()


def test_the_native_check_is_not_fooled_by_python_objects():
    from gateway.audit.hashing import sha256_hex
    from gateway.audit.mmr import MerkleMountainRange

    assert not _is_native(MerkleMountainRange) and not _is_native(sha256_hex)
    assert _is_native(twins.native().MerkleMountainRange) and _is_native(twins.native().sha256_hex)
