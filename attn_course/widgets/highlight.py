"""Weights as highlights: each token or sentence on an orange background as opaque as its weight.

One colour rule for HTML (``highlight_span``) and for matplotlib (``highlight_rgba``): a weight w
among weights whose largest is ``top`` gets opacity 0.85 * w / top, so the largest is the darkest
and its text stays readable, and a weight of 0 leaves the background clear.
"""
HIGHLIGHT_RGB = (1.0, 0.55, 0.0)                                     # orange, as a matplotlib colour


def highlight_alpha(weight, top):
    """The opacity of a highlight: ``0.85 * weight / top`` (0 when ``top`` is 0)."""
    return 0.85 * weight / max(top, 1e-12)


def highlight_rgba(weight, top):
    """The highlight of ``weight`` as a matplotlib RGBA tuple (e.g. a text box's ``fc``)."""
    return (*HIGHLIGHT_RGB, highlight_alpha(weight, top))


def highlight_span(inner_html, weight, top):
    """``inner_html`` (already escaped) in a ``<span>`` shaded by ``weight``; hovering shows the weight.

    >>> highlight_span("cat", 0.5, 1.0)
    '<span title="0.500" style="background:rgba(255, 140, 0, 0.425);padding:1px 2px;border-radius:3px">cat</span>'
    """
    rgb = ", ".join(str(round(255 * c)) for c in HIGHLIGHT_RGB)
    return (f'<span title="{weight:.3f}" style="background:rgba({rgb}, {highlight_alpha(weight, top):.3f});'
            f'padding:1px 2px;border-radius:3px">{inner_html}</span>')
