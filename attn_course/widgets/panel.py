"""The one scaffold every widget of the course is built on: controls, a readout and a chart.

A ``Panel`` stacks its controls above an ``HTML`` readout and a PNG ``Image``, and redraws both
whenever a control's value changes. A widget subclasses it and writes only what it computes and
draws: ``text()`` (the readout as plain text) and ``figure()`` (the chart, a matplotlib Figure).

Charts are drawn on ``attn_course.plot.new_figure`` (or a ``matplotlib.figure.Figure``) and rendered
with ``figure_png``, never with pyplot: pyplot is not thread-safe, and JupyterLab >= 4.4 with
ipykernel 7 may run widget callbacks on a kernel thread of their own.
"""
import contextlib
import html

import ipywidgets as widgets

from ..plot import figure_png


class Panel(widgets.VBox):
    """Controls above a readout and a chart; a new value in any control redraws both.

    ``update()`` writes ``text()`` into the readout (escaped, in a ``<pre>``) and renders
    ``figure()`` into the chart. A subclass sets up everything these two need, then calls
    ``super().__init__(...)`` last: it wires each control's ``observe(..., names="value")`` to
    ``update`` and draws once. A subclass whose readout is richer than plain text overrides
    ``update()`` and uses ``show_html`` / ``show_figure``.

    Args:
        controls: the widgets whose ``value`` redraws the panel.
        readout_class: the CSS class of the readout (tests and the browser find it by this name).
        chart_class: the CSS class of the chart, or None for a panel without a chart.
        chart_width: the chart's CSS width, e.g. ``"760px"``.
        rows: what stands above the readout, top to bottom (default: ``controls``, one a line);
            e.g. ``[slider, widgets.HBox([box_a, box_b])]``, or a control wired by hand (a button).
        chart_first: put the chart above the readout instead of below it.
        **kwargs: passed to ``ipywidgets.VBox`` (e.g. ``layout``).

    Attributes:
        readout (HTML), image (Image, or None without a chart); ``hold()`` moves several controls
        with one redraw; ``show_text``, ``show_html``, ``show_figure`` fill the readout and chart.

    >>> import torch
    >>> from attn_course.plot import new_figure, weights_bar
    >>> class Softmax(Panel):
    ...     def __init__(self, attn_scores):
    ...         self.attn_scores = attn_scores
    ...         self.slider = widgets.FloatSlider(value=1.0, min=0.1, max=5.0, description="T")
    ...         super().__init__([self.slider], "softmax-readout", "softmax-chart", "480px")
    ...     def text(self):
    ...         return f"T = {self.slider.value:.2f}"
    ...     def figure(self):
    ...         fig = new_figure((4.8, 2.6))
    ...         weights_bar(torch.softmax(self.attn_scores / self.slider.value, -1), ax=fig.add_subplot())
    ...         return fig
    >>> panel = Softmax(torch.tensor([2.0, 0.0, -1.0]))
    >>> panel.slider.value = 0.5
    >>> panel.readout.value
    '<pre>T = 0.50</pre>'
    """

    def __init__(self, controls, readout_class, chart_class=None, chart_width="760px", rows=None,
                 chart_first=False, **kwargs):
        self.readout = widgets.HTML()
        self.readout.add_class(readout_class)
        self.image = None
        shown = [self.readout]
        if chart_class is not None:
            self.image = widgets.Image(format="png", layout=widgets.Layout(width=chart_width))
            self.image.add_class(chart_class)
            shown = [self.image, self.readout] if chart_first else [self.readout, self.image]
        super().__init__([*(controls if rows is None else rows), *shown], **kwargs)
        self._held = 0
        for control in controls:
            control.observe(self._changed, names="value")
        self.update()

    def _changed(self, change):
        if not self._held:
            self.update()

    @contextlib.contextmanager
    def hold(self):
        """Move several controls inside ``with panel.hold():``; the panel redraws once, at the end
        (not at all when the block raises)."""
        self._held += 1
        try:
            yield self
        finally:
            self._held -= 1
        if not self._held:
            self.update()

    def text(self):
        """The readout as plain text (each widget defines it)."""
        raise NotImplementedError(f"{type(self).__name__} must define text()")

    def figure(self):
        """The chart for the current controls: a matplotlib Figure, or None to leave it as it is."""
        return None

    def update(self):
        """Redraw from the current controls: the readout from ``text()``, the chart from ``figure()``."""
        self.show_text(self.text())
        if self.image is not None:
            self.show_figure(self.figure())

    def show_text(self, text):
        """Show plain ``text`` in the readout, escaped in a ``<pre>`` (so ``<eos>`` stays text)."""
        self.readout.value = f"<pre>{html.escape(text)}</pre>"

    def show_html(self, markup):
        """Show ready-made HTML in the readout; escape any text from the learner or the data in it."""
        self.readout.value = markup

    def show_figure(self, fig):
        """Render ``fig`` (a matplotlib Figure, not pyplot's) as PNG into the chart; None keeps the chart.

        Raises:
            ValueError: the panel was built without a chart (``chart_class=None``).
        """
        if self.image is None:
            raise ValueError(f"{type(self).__name__} has no chart to draw on: give Panel a chart_class")
        if fig is not None:
            self.image.value = figure_png(fig)
