"""Layer-by-layer summaries: shapes, parameter arithmetic, MACs, receptive fields (`cnnzoo summary`)."""

from .render import format_summary, summary_to_dict
from .summary import LayerRow, ModelSummary, summarize, summarize_model
from .trace import WHOLE_INPUT

__all__ = [
    "WHOLE_INPUT",
    "LayerRow",
    "ModelSummary",
    "format_summary",
    "summarize",
    "summarize_model",
    "summary_to_dict",
]
