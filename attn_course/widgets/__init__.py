"""Interactive controls for the lessons (ipywidgets): one module per lesson family or application.

Every widget is a ``Panel`` (``panel.py``): controls above a text readout and a chart, redrawn when a
control moves. The chart is drawn with ``attn_course.plot.new_figure`` / ``figure_png`` into an
``ipywidgets.Image`` instead of calling ``plt.show()`` in a callback: pyplot is not thread-safe, and
JupyterLab >= 4.4 with ipykernel 7 may run widget callbacks on a separate kernel thread.
``python -m attn_course.lab`` also turns that thread off (``commsOverSubshells: "disabled"``) for
learners' own widgets. Token and sentence highlights share one colour rule (``highlight.py``).
"""
from .bug_hunt import SuspectExplorer
from .captioning import CaptionExplorer
from .classification import ReviewExplorer
from .embedding import PaddingExplorer
from .encoder_decoder import CrossAttentionExplorer
from .flash import TilingExplorer
from .generation import GenerationExplorer
from .hard import GumbelExplorer
from .heads import HeadPicker, QueryPicker
from .masks import MaskExplorer
from .panel import Panel
from .rotary import RotaryExplorer
from .scores import ScaleExplorer, TemperatureExplorer
from .speech import SpeechExplorer
from .summarization import SummaryExplorer
from .translation import TranslationExplorer
from .vision import PatchPicker

__all__ = ["CaptionExplorer", "CrossAttentionExplorer", "GenerationExplorer", "GumbelExplorer", "HeadPicker",
           "MaskExplorer", "PaddingExplorer", "Panel", "PatchPicker", "QueryPicker", "ReviewExplorer", "ScaleExplorer",
           "SpeechExplorer", "SummaryExplorer", "RotaryExplorer", "SuspectExplorer", "TemperatureExplorer",
           "TilingExplorer", "TranslationExplorer"]
