"""Widgets (ipywidgets + plotly; no npm build).

- `SweepPanel`: progress of a sweep and two charts, throughput and a GIL view against
  concurrency, one line per mode/switch label, updated as each cell finishes
  (`run_sweep(..., on_cell=panel.on_cell)`; `%sweep` wires it for you). The charts are plain
  plotly figures redrawn into `ipywidgets.Output` areas: a plotly FigureWidget does not draw
  its data in JupyterLab until the kernel is idle, i.e. after the sweep that feeds it (its
  view waits on messages the busy kernel answers only then).
- `SwitchPanel`: mode, ASGI shell and a per-component choice (follow the mode, python,
  rust) for every component in `gateway.twins.COMPONENTS`; "apply" restarts the
  `%gateway` session (or calls your own `on_apply(switches, shell)`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go

# Names a sweep cell may use for the same quantity, first match wins. The sweep API
# (harness.infra.sweep) owns the result schema; these keep the panel tolerant of its growth.
_CONC = ("concurrency", "c")
_TPUT = ("rps", "throughput_rps", "throughput")
_GIL = (  # the GIL view plotted, in order of preference, with its axis title
    ("gil_wait_p99_us", "GIL acquisition wait p99 (µs, exact probe)"),
    ("gil_held_share", "GIL held share (sampled, py-spy)"),
    ("loop_lag_p99_us", "event-loop lag p99 (µs, exact)"),
)


def cell_label(c: Mapping) -> str:
    """`py`, `py+rs`, `rs-core`, `py[mmr=rust]`, plus governance when not "on" (`rs-core gov=off`),
    the worker count when more than one (`py w=2`), tracing when not "off" (`py trace=on`), the
    upstream's name in a sweep over several (`py up=slow`), `probes=on` on a GIL/loop view cell
    and the shell when it is not the default asgi."""
    label = str(c.get("mode") or c.get("label") or "?")
    sw = c.get("switches")
    if isinstance(sw, Mapping):
        sw = ",".join(f"{k}={v}" for k, v in sorted(sw.items()))
    if sw:
        label += f"[{sw}]" if not str(sw).startswith(label) else str(sw)[len(label) :]
    gov = c.get("governance")
    if isinstance(gov, str) and gov not in ("", "on", "shipped"):  # shipped: a peer as it comes
        label += f" gov={gov}"
    w = c.get("workers")
    if isinstance(w, (int, float)) and w > 1:  # the worker axis (docs/workers.md)
        label += f" w={int(w)}"
    tr = c.get("tracing")
    if isinstance(tr, str) and tr not in ("", "off"):
        label += f" trace={tr}"
    up = c.get("upstream")
    if isinstance(up, str) and up:  # one of several mock upstreams (harness.infra.sweep `upstreams`)
        label += f" up={up}"
    if c.get("probes") == "on":  # a GIL/loop view cell: probes inside the gateway, not for throughput
        label += " probes=on"
    if c.get("shell") not in (None, "", "asgi", "-"):  # "-": no shell (rs-server, peers)
        label += f" ({c['shell']})"
    return label


def _as_mapping(cell: Any) -> Mapping:
    if isinstance(cell, Mapping):
        return cell
    if hasattr(cell, "to_dict"):  # pandas Series / one-row frame
        d = cell.to_dict()
        return {k: (list(v.values())[0] if isinstance(v, dict) and len(v) == 1 else v) for k, v in d.items()}
    if hasattr(cell, "__dict__"):
        return vars(cell)
    return {}


def _pick(cell: Mapping, keys) -> Any:
    for k in keys:
        if k in cell and cell[k] is not None:
            return cell[k]
    return None


class SweepPanel:
    """Live view of a running sweep."""

    def __init__(self, total: int | None = None, title: str = "sweep"):
        self.total = total
        self.n = 0
        self.title = title
        self.progress = W.IntProgress(min=0, max=max(total or 1, 1), description="cells", bar_style="info")
        self.status = W.HTML(f"<b>{title}</b>: waiting for the first cell")
        layout = dict(
            height=320,
            width=540,
            margin=dict(l=50, r=10, t=40, b=40),
            xaxis=dict(title="concurrency", type="log"),
        )
        self.throughput = go.Figure(
            layout=dict(layout, title="throughput (2xx/s)", yaxis=dict(title="req/s"))
        )
        self.gil = go.Figure(layout=dict(layout, title="GIL", yaxis=dict(title="")))
        self._out = {id(self.throughput): W.Output(), id(self.gil): W.Output()}
        self.widget = W.VBox(
            [
                W.HBox([self.progress, self.status]),
                W.HBox([self._out[id(f)] for f in (self.throughput, self.gil)]),
            ]
        )
        self.cells: list[dict] = []
        for fig in (self.throughput, self.gil):
            self._draw(fig)

    @classmethod
    def for_sweep(cls, kwargs: Mapping[str, Any]) -> SweepPanel:
        """A panel sized from run_sweep's keywords (cells = labels x concurrencies x repeats)."""

        def n(key, default=1):
            v = kwargs.get(key)
            return len(v) if isinstance(v, (list, tuple)) else default

        labels = max(n("targets", 0), n("modes") * n("shells"), n("switches", 0)) or 1
        rates = kwargs.get("rates")
        points = len(str(rates).split(",")) if rates else n("concurrency")
        total = labels * points * int(kwargs.get("repeat") or 1)
        return cls(total=total, title=kwargs.get("profile") or "sweep")

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _draw(self, fig: go.Figure) -> None:
        """Put `fig` (as it is now) into its output area: an output message the page shows at
        once, busy kernel or not."""
        import plotly.io as pio

        # JupyterLab's plotly mime bundle, set as the Output widget's whole state (IPython's
        # display machinery would publish the figure into the running cell, beside the panel)
        data = pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_plotly_json())
        self._out[id(fig)].outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)

    def _add_point(self, fig: go.Figure, label: str, x: float, y: float) -> None:
        for tr in fig.data:
            if tr.name == label:
                pts = sorted(zip(list(tr.x) + [x], list(tr.y) + [y]))
                tr.x, tr.y = [p[0] for p in pts], [p[1] for p in pts]
                break
        else:
            fig.add_scatter(x=[x], y=[y], name=label, mode="lines+markers")
        self._draw(fig)

    def on_cell(self, cell: Any) -> None:
        """Feed one finished sweep cell (a mapping, a Series or a dataclass)."""
        c = _as_mapping(cell)
        self.cells.append(dict(c))
        self.n += 1
        if self.total is None or self.n > self.total:
            self.progress.max = self.n
        self.progress.value = self.n
        label = cell_label(c)
        conc, tput = _pick(c, _CONC), _pick(c, _TPUT)
        if conc is not None and tput is not None and tput == tput:  # NaN for a failed cell
            self._add_point(self.throughput, label, float(conc), float(tput))
        for key, title in _GIL:
            if c.get(key) is not None and conc is not None:
                self._add_point(self.gil, label, float(conc), float(c[key]))
                if self.gil.layout.yaxis.title.text != title:
                    self.gil.layout.yaxis.title.text = title
                    self._draw(self.gil)
                break
        if c.get("status") not in (None, "ok"):
            tp = f"{c.get('status')}: {str(c.get('error') or '')[:120]}"
        else:
            tp = f"{float(tput):,.0f} req/s" if tput is not None else "?"
        self.status.value = f"<b>{self.title}</b>: cell {self.n}/{self.total or '?'}: {label} c={conc} → {tp}"

    def done(self, result: Any = None) -> None:
        self.progress.bar_style = "success"
        where = getattr(result, "dir", None)
        self.status.value = f"<b>{self.title}</b>: done, {self.n} cells" + (
            f" → <code>{where}</code>" if where else ""
        )


class SwitchPanel:
    """Mode, shell and per-component twins; "apply" restarts the gateway session."""

    FOLLOW = "mode"

    def __init__(
        self,
        on_apply: Callable[[Any, str | None], Any] | None = None,
        mode: str = "py",
        shell: str | None = None,
    ):
        from gateway.twins import COMPONENTS, MODES

        self.mode = W.ToggleButtons(options=list(MODES), value=mode, description="mode")
        self.shell = W.Dropdown(
            options=["default", "fastapi", "asgi"], value=shell or "default", description="shell"
        )
        self.components = {
            c: W.ToggleButtons(
                options=[self.FOLLOW, "python", "rust"],
                value=self.FOLLOW,
                description=c,
                style={"button_width": "70px"},
            )
            for c in COMPONENTS
        }
        self.label = W.HTML()
        self.apply = W.Button(description="apply (restart gateway)", button_style="primary")
        self.output = W.Output()
        self._on_apply = on_apply
        for w in [self.mode, *self.components.values()]:
            w.observe(lambda _change: self._refresh(), names="value")
        self.apply.on_click(lambda _b: self._apply())
        self.widget = W.VBox(
            [
                self.mode,
                self.shell,
                W.VBox(list(self.components.values())),
                W.HBox([self.apply, self.label]),
                self.output,
            ]
        )
        self._refresh()

    @property
    def switches(self):
        from gateway.twins import PER_COMPONENT_MODES, Switches

        if self.mode.value not in PER_COMPONENT_MODES:  # rs-core: the whole pipeline is one Rust call
            return Switches(self.mode.value)
        ov = {c: w.value for c, w in self.components.items() if w.value != self.FOLLOW}
        return Switches(self.mode.value, ov)

    @property
    def shell_value(self) -> str | None:
        return None if self.shell.value == "default" else self.shell.value

    def _refresh(self) -> None:
        from gateway.twins import PER_COMPONENT_MODES

        per_component = self.mode.value in PER_COMPONENT_MODES
        for w in self.components.values():
            w.disabled = not per_component
        self.label.value = f"switches: <code>{self.switches.label()}</code>"

    def _apply(self):
        with self.output:
            self.output.clear_output()
            sw = self.switches
            if self._on_apply is not None:
                return self._on_apply(sw, self.shell_value)
            from lab_ext.magics import session

            s = session()
            s.start(mode=sw.mode, impl=dict(sw.overrides), shell=self.shell_value)
            print(f"gateway restarted at {s.gateway.url} with {sw.label()}")
            return s

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
