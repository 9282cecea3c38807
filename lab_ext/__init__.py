"""IPython extension for gatewaylab notebooks: `%load_ext lab_ext`.

Magics (lab_ext.magics): `%gateway up|down|status`, `%sweep ...` (the CLI's options),
`%bench mmr|spawn|wal`, `%%profile` (py-spy or scalene). Widgets (lab_ext.widgets):
`SweepPanel` (live sweep progress and charts) and `SwitchPanel` (mode and per-component
twins). Blog export (lab_ext.export): markdown tables with spread, static images,
standalone HTML figures.
"""

from __future__ import annotations

__all__ = ["load_ipython_extension", "unload_ipython_extension", "session", "SweepPanel", "SwitchPanel"]


def load_ipython_extension(ipython) -> None:
    from lab_ext.magics import LabMagics

    ipython.register_magics(LabMagics)


def unload_ipython_extension(ipython) -> None:
    from lab_ext.magics import session as _session

    _session().stop()


def session():
    from lab_ext.magics import session as _session

    return _session()


def __getattr__(name):  # widgets import ipywidgets/plotly: only when asked for
    if name in ("SweepPanel", "SwitchPanel"):
        from lab_ext import widgets

        return getattr(widgets, name)
    raise AttributeError(name)
