"""Choosing the advisor's rules on the calibration grid, by a procedure written down rather than by eye.

The rules (`advise.recommend`) read three measured figures: images per class, the probe's gain over
random features, and how much of the source's own accuracy the probe keeps. Their form is the
textbook's (CS231n; Yosinski et al. 2014); what the calibration grid of `cnnzoo study transfer` decides
is two things, and `fit_rules` decides them from that grid's rows alone:

1. `scratch_gain`: below this gain (points), with more than `SMALL` images per class, train from scratch.
   Each threshold between two measured gains is a different rule; the best is the one whose whole rule
   table picks near-best (within `NEAR` points of the best strategy) in the most rows, then with the
   least mean shortfall; among equally good ones, the middle of the widest interval (the largest margin
   from the gains measured on either side).
2. the strategy of each cell of the table (data size: little, moderate, plenty; similar or not): the one
   near-best in the most calibration rows of that cell, then with the least mean shortfall, then the
   cheaper. A cell with no calibration row keeps the textbook's strategy (`TEXTBOOK`).

It also says how sure each cell is: a cell whose strategy was near-best in every calibration row is
"sure"; one that missed a row, or had none, is not, and the advisor sends those rows to `--trial`
instead of guessing (`advise.ambiguities`). The held-out grid never enters: the study scores the rules
fitted here on rows no threshold was chosen on.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

__all__ = ["Fit", "fit_rules", "refit_table", "pick", "cell_of", "TEXTBOOK", "NEAR", "SIZES"]

NEAR = 1.0  # points: a pick within this of the best strategy of its row is near-best
SIZES = ("little", "moderate", "plenty")
# The classic table, for cells the calibration grid has no row in: little data and similar features
# keep the source's layers (a new head); otherwise re-train the later stages, and everything with plenty.
TEXTBOOK = {
    ("little", True): "head",
    ("little", False): "last:2",
    ("moderate", True): "last:2",
    ("moderate", False): "last:2",
    ("plenty", True): "full",
    ("plenty", False): "full",
}
CANDIDATES = ("head", "last:1", "last:2", "last:3", "full")  # cheapest first; scratch has its own threshold


@dataclass
class Fit:
    scratch_gain: float
    table: dict  # (size, similar) -> strategy
    record: dict = field(default_factory=dict)  # (size, similar) -> (near-best rows, rows) on calibration
    near: int = 0  # calibration rows the fitted rules pick near-best
    rows: int = 0

    def sure(self, cell: tuple[str, bool]) -> bool:
        near, rows = self.record.get(cell, (0, 0))
        return rows > 0 and near == rows


def cell_of(samples_per_class: float, kept: float | None, probe_source: float, small: int, large: int,
            similar_probe: float) -> tuple[str, bool]:  # fmt: skip
    """(data size, similar?) of the measured figures, as `advise.recommend` reads them."""
    size = "little" if samples_per_class < small else "plenty" if samples_per_class > large else "moderate"
    similar = (kept if kept is not None else probe_source / 100) * 100 >= similar_probe
    return size, similar


def _figures(row: dict) -> tuple[float, float, float | None, int]:
    a = row["advice"]
    return a["samples_per_class"], a["probe_source"] - a["probe_random"], a["kept"], a["probe_source"]


def _regret(row: dict, strategy: str) -> float:
    cells = {s: c["mean"] for s, c in row["cells"].items() if not s.endswith("+bn")}
    return max(cells.values()) - cells[strategy] if strategy in cells else math.inf


def pick(rows: list[dict]) -> tuple[str, int]:
    """The candidate near-best in most `rows`, then with the least mean shortfall, then the cheapest."""
    scored = []
    for i, s in enumerate(CANDIDATES):
        regrets = [_regret(r, s) for r in rows]
        if math.inf in regrets:
            continue
        scored.append((-sum(g <= NEAR for g in regrets), statistics.fmean(regrets), i, s))
    best = min(scored)
    return best[3], -best[0]


def _fit_table(rows: list[dict], gain: float, small: int, large: int, similar_probe: float):
    """(table, record, near-best rows, total shortfall) with scratch below `gain`."""
    near, shortfall, by_cell = 0, 0.0, {}
    for row in rows:
        n, g, kept, ps = _figures(row)
        if n > small and g < gain:
            r = _regret(row, "scratch")
            near, shortfall = near + (r <= NEAR), shortfall + r
        else:
            by_cell.setdefault(cell_of(n, kept, ps, small, large, similar_probe), []).append(row)
    table, record = dict(TEXTBOOK), {}
    for cell, members in by_cell.items():
        table[cell], hits = pick(members)
        record[cell] = (hits, len(members))
        near += hits
        shortfall += sum(_regret(r, table[cell]) for r in members)
    return table, record, near, shortfall


def fit_rules(rows: list[dict], *, small: int, large: int, similar_probe: float, margin: float = 2.0) -> Fit:
    """Fit `scratch_gain` and the table's cells on calibration `rows` (each with its measured "advice"
    figures and its strategies' mean accuracies in "cells"). `margin`: how far below the lowest (above
    the highest) measured gain the threshold goes when the best interval is open."""
    gains = sorted({_figures(r)[1] for r in rows if _figures(r)[0] > small})
    bounds = [-math.inf, *gains, math.inf]
    scored = []
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        if math.isinf(lo) and math.isinf(hi):
            at = 0.0
        else:
            at = hi - margin if math.isinf(lo) else lo + margin if math.isinf(hi) else (lo + hi) / 2
        _, _, near, shortfall = _fit_table(rows, at, small, large, similar_probe)
        width = hi - lo if not (math.isinf(lo) or math.isinf(hi)) else margin * 2
        scored.append((-near, round(shortfall, 6), -width, at))
    _, _, _, gain = min(scored)
    table, record, near, _ = _fit_table(rows, gain, small, large, similar_probe)
    return Fit(round(gain, 2), table, record, near, len(rows))


def refit_table(rows: list[dict], to_scratch, cell) -> tuple[dict, dict]:
    """(table, record) of `pick` on the `rows` that the scratch rules leave to the table: `to_scratch(n,
    probe_source, probe_random, kept)` says whether they send a row to scratch, `cell(n, probe_source, kept)` is its cell. How
    `advise.TABLE` and `advise.RECORD` were refitted with the size bands (issue 21), on every LeNet-5 row
    measured before the dissimilar-4 grid; cells without a row keep the textbook's strategy."""
    by_cell: dict = {}
    for row in rows:
        n, gain, kept, probe_source = _figures(row)
        if not to_scratch(n, probe_source, probe_source - gain, kept):
            by_cell.setdefault(cell(n, probe_source, kept), []).append(row)
    table, record = dict(TEXTBOOK), {}
    for c, members in by_cell.items():
        table[c], hits = pick(members)
        record[c] = (hits, len(members))
    return table, record
