"""A `ModelSummary` as a text table (`format_summary`) or as plain JSON-ready data (`summary_to_dict`)."""

from __future__ import annotations

from dataclasses import asdict

from .summary import LayerRow, ModelSummary

__all__ = ["format_summary", "summary_to_dict"]

_COLUMNS = ("Layer", "Type", "Output shape", "Params", "Param arithmetic", "MACs", "RF", "Jump")
_RIGHT = {"Params", "MACs", "RF", "Jump"}  # right-aligned numeric columns


def _dims(values) -> str:
    """(5, 5) -> "5"; (1, 7) -> "1x7" (height x width); "all" stays; None -> "-"."""
    if values is None:
        return "-"
    if isinstance(values, str):
        return values
    return str(values[0]) if len(set(values)) == 1 else "x".join(str(v) for v in values)


def _shape(shape) -> str:
    return "-" if shape is None else "x".join(str(d) for d in shape) or "scalar"


def _bytes(n: int) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} KB"


def _macs(n: int) -> str:
    return f"{n:,} ({n / 1e9:,.2f} G)" if n >= 1e9 else f"{n:,} ({n / 1e6:,.2f} M)"


def _cells(row: LayerRow, indent: bool) -> list[str]:
    name = row.name or "(model)"
    if indent:
        name = "  " * max(row.depth - 1, 0) + name
    formula = row.param_formula
    if row.params and row.trainable == 0:
        formula += " [frozen]"
    elif 0 < row.trainable < row.params:
        formula += f" [{row.params - row.trainable:,} frozen]"
    return [
        name, row.type, _shape(row.output_shape), f"{row.params:,}", formula, f"{row.macs:,}",
        _dims(row.receptive_field), _dims(row.jump),
    ]  # fmt: skip


def format_summary(summary: ModelSummary, indent: bool = False) -> str:
    """The table `cnnzoo summary` prints: one line per row, then the totals and what RF/Jump mean."""
    table = [list(_COLUMNS)] + [_cells(r, indent) for r in summary.rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]

    def line(cells: list[str]) -> str:
        padded = (
            c.rjust(w) if h in _RIGHT else c.ljust(w) for c, w, h in zip(cells, widths, _COLUMNS, strict=True)
        )
        return "  ".join(padded).rstrip()

    rule = "-" * len(line(table[0]))
    c, *hw = summary.input_size
    size = f"{c}x{'x'.join(str(v) for v in hw)}"
    depth = "" if summary.depth is None else f", depth {summary.depth}"
    out = [f"{summary.model_name} on a {size} input{depth}", rule, line(table[0]), rule]
    out += [line(cells) for cells in table[1:]]
    out += [
        rule,
        f"Total params:      {summary.total_params:,}",
        f"Trainable params:  {summary.trainable_params:,}",
        f"Frozen params:     {summary.frozen_params:,}",
        f"MACs per image:    {_macs(summary.total_macs)}",
        f"Activations:       {_bytes(summary.activation_bytes)} per image (new output tensors of every layer)",
        f"Input size:        {size}",
        rule,
        'RF: receptive field in input pixels ("all": every input pixel, after a global pool or flatten).',
        "Jump: input pixels between neighbouring outputs (cumulative stride). A k x k layer sees",
        "RF_in + (k - 1) x Jump_in: two stacked 3x3 convs see 5, three see 7 (in units of the jump).",
    ]
    return "\n".join(out)


def summary_to_dict(summary: ModelSummary) -> dict:
    """The summary as JSON-ready data: lists for tuples, "all" for a whole-input receptive field."""
    data = asdict(summary)
    data["input_size"] = list(summary.input_size)
    for row in data["rows"]:
        for key in ("output_shape", "receptive_field", "jump"):
            if isinstance(row[key], tuple):
                row[key] = list(row[key])
    return data
