"""The transfer study's report: tables, plots, the advisor scored in and out of sample, trial against rules,
which principles held on LeNet-5 and whether they carry over to ResNet-20, and frozen against live BatchNorm."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..artifacts.figure import SIZES, label_axes, new_figure, save_figure
from ..transfer.advise import (
    CEILING,
    LARGE,
    OWN_FEATURES_MIN,
    SCRATCH_GAIN,
    SCRATCH_MIN,
    SIMILAR_PROBE,
    SMALL,
    TABLE,
    UNLIKE_PROBE,
    WORTH_GAIN,
    ambiguities,
    recommend,
)
from ..transfer.calibrate import fit_rules
from ..transfer.trial import Trial

__all__ = [
    "write_report",
    "finding",
    "principles",
    "advisor_score",
    "advised",
    "near_best",
    "best",
    "bn_comparison",
]

NEAR = 1.0  # points: "near-best"
ORDER = ("scratch", "head", "last:1", "last:2", "last:3", "full", "gradual", "last:1+bn", "last:2+bn")
GRID_TEXT = {
    "calibration": "The grid the advisor's thresholds were chosen on: its score here is in sample.",
    "held-out": "No threshold was ever chosen on these rows: the advisor's score here is out of sample. (Their "
    "figures from an earlier run were seen when the rules were refitted on the calibration grid, hence the "
    "unseen grid below.)",
    "unseen": "Rows chosen and committed after the rules were refitted, before any of them was measured: out of "
    "sample, and unseen by whoever chose the rules.",
    "deeper": "A deeper network, its stem and three stages as groups: do LeNet-5's lessons and the advisor's "
    "rules carry over?",
    "dissimilar": "Issue 21's held-out grid: sources unlike their targets (digits from clothing, letters from "
    "digits, clothing from letters, ...) at small and large sizes, pairs and sizes in no other grid. Committed "
    "(commit 36c38b0) before any of it was measured; the rules it scores (the unlike-source rule: scratch where "
    f"the probe keeps under {UNLIKE_PROBE:.0f}% of the source's accuracy, from {SCRATCH_MIN} images a class) were "
    "committed (197daf7) before its figures were looked at, and picked near-best in 7 of its 13 rows (54%; all "
    "held-out rows together 29 of 38, 76%): **not met** out of sample; scratch was best in 10 of its 13 rows. The "
    f"rules were then revised (scratch with different features, under {SIMILAR_PROBE:.0f}% kept, from "
    f"20 images a class): the scores below are theirs, and this grid's rows are in sample "
    "for them. Sized for ~40 minutes of the shared 2-core machine: "
    "sources of 2 epochs (`--epochs 2`; the default recipes' fashion-mnist and glyphs-latin sources took 12 "
    "minutes each), one seed; measured by a run of this grid alone (`run_transfer_study(grids=('dissimilar',), "
    "seeds=1)`), the other grids' figures kept from the earlier run.",
    "dissimilar-2": "Pre-registered to score the revised rules out of sample: more unlike pairs (Greek and "
    "Cyrillic letters from clothing or handwritten digits, clothing and Latin letters from typed digits) at small "
    "and large sizes, pairs and sizes in no other grid, chosen and committed (commit e07a812) before any of it was "
    "measured, after the rules were revised on the dissimilar grid; `advise.py` was not changed since (the rules "
    "of commit 20a3b90 are those scored here). The one grid whose rows no rule of the advisor was chosen on "
    "after seeing them. One seed; the dissimilar grid's 2-epoch sources, reused; measured by a run of this grid "
    "alone (`run_transfer_study(grids=('dissimilar-2',), seeds=1)`). Those rules picked near-best in 6 of its 8 "
    "rows (75%; all held-out rows together 38 of 46, 83%): **not met**. One miss was a source no better than "
    "random features (typed digits -> clothing at 5 a class, gain -8.0) sent to full, because the scratch rule "
    "then held only above 30 images a class; issue 21 says scratch whenever the source is no better than random "
    f"features, so the rule was changed (commit 6564390: scratch below a gain of {SCRATCH_GAIN:+.1f} points at "
    "every size) after this grid was measured: its rows are in sample for that change, and the scores below are "
    "the changed rules'. On the 46 held-out rows measured before the change it scores 37 (was 38): +1 here "
    "(typed digits -> clothing at 5 a class), -2 on the unseen grid (letters -> scanned digits at 10 a class and "
    "clothing -> scanned digits at 5, features below random yet fine-tuning beat scratch by 1.9 and 35 points).",
    "dissimilar-3": "Pre-registered to score the rules as changed after dissimilar-2 (a source no better than "
    "random features: scratch at any size) out of sample: more unlike pairs (Greek letters from handwritten "
    "digits, Latin letters from typed digits, Cyrillic letters from clothing at 5 and 100 a class; scanned digits "
    "from letters at 5, handwritten digits from letters at 300), pairs and sizes in no other grid, chosen and "
    "committed (commit fa721e9) before any of it was measured, after the rules' change (commit 6564390); "
    "`advise.py` was not changed since. One seed; the dissimilar grids' 2-epoch sources, reused (nothing "
    "retrained); measured by a run of this grid alone (`run_transfer_study(grids=('dissimilar-3',), seeds=1)`). "
    "Seen after measuring, nothing changed for it: the rules before the change would have picked near-best in 6 "
    "of its 8 rows; the change cost letters -> scanned digits at 5 a class (features 22 points below random, "
    "scratch 15.6% against full 72.7%). Its rows, with every earlier grid's, were then used to choose the size "
    "bands (commit 2d9f898): in sample for them.",
    "dissimilar-4": "Pre-registered to score the size bands out of sample (no scratch rule under 10 images a "
    "class; from 10, scratch for a source below random features or keeping under 60% of its accuracy; from 50, "
    "scratch unless the source adds 15 points over random features; the table refitted on every row measured "
    "before): unlike pairs from two sources no grid had used (Greek and Cyrillic letters) and other sizes, "
    "chosen and committed with those rules (commit 2d9f898) before any of it was measured. One seed; 2-epoch "
    "sources; measured by a run of this grid alone (`run_transfer_study(grids=('dissimilar-4',), seeds=1)`). "
    "Those rules picked near-best in 6 of its 10 rows (60%; all held-out rows together 52 of 64, 81%, in sample "
    "for the bands but this grid): **not met**. Two misses were scanned-digits targets, where random features "
    "alone scored 85-90% and the source's features 10 points less, yet fine-tuning beat scratch by 1.7 and 2.2 "
    "points (as on three earlier scanned-digits rows): the rules were revised after this grid (commit 22a8883: "
    "no scratch rule where random features already score 80%, the table refitted on all 73 rows), so its rows "
    "are in sample for that revision and the scores below are the revised rules'.",
    "dissimilar-5": "Pre-registered to score the rules as revised after dissimilar-4 (the ceiling of random "
    "features, the table refitted on all 73 LeNet-5 rows measured before) out of sample: more unlike pairs "
    "(handwritten and typed digits from Greek letters, clothing and scanned digits from Cyrillic letters) and "
    "unlike pairs at sizes no grid had, chosen and committed with those rules (commit 22a8883) before any of it "
    "was measured; the rules' picks were not changed since (only one reason's wording). One seed; 2-epoch sources; measured by a run of this grid "
    "alone (`run_transfer_study(grids=('dissimilar-5',), seeds=1)`).",
}
# the grids no threshold of the rules was chosen on before they were measured (see IN_SAMPLE for after)
OUTSIDE = ("held-out", "unseen", "dissimilar", "dissimilar-2", "dissimilar-3", "dissimilar-4", "dissimilar-5")
BANDS = "the size bands, the worth-its-bias gain, the ceiling of random features and the refitted table (issue 21)"
# grid -> the rules chosen after its rows were measured (so its rows are in sample for them)
IN_SAMPLE = {
    "calibration": f"the thresholds and the table, fitted on it; {BANDS}",
    "held-out": f"the unlike-source rule, {UNLIKE_PROBE:.0f}% kept from {SCRATCH_MIN} a class; {BANDS}",
    "unseen": f"the unlike-source rule, {UNLIKE_PROBE:.0f}% kept from {SCRATCH_MIN} a class; {BANDS}",
    "dissimilar": f"the different-features rule, {SIMILAR_PROBE:.0f}% kept from 20 a class (since dropped); {BANDS}",
    "dissimilar-2": f"the no-better-than-random rule at every size, a gain below {SCRATCH_GAIN:+.1f} (since from "
    f"{SCRATCH_MIN} a class); {BANDS}",
    "dissimilar-3": BANDS,
    "dissimilar-4": f"the ceiling of random features ({CEILING:.0f}%) and the table refitted after it",
}
UNLIKE_GRIDS = (
    "dissimilar",
    "dissimilar-2",
    "dissimilar-3",
    "dissimilar-4",
    "dissimilar-5",
)  # the picks table, row by row


def _strategies(row: dict) -> list[str]:
    return sorted(row["cells"], key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))


def advised(row: dict) -> str:
    """The rules' pick for a row, re-derived from the figures they measured (so rule changes re-apply)."""
    a = row["advice"]
    if "num_groups" not in a:
        return a["strategy"]
    return recommend(
        a["samples_per_class"], a["probe_source"], a["probe_random"], a["kept"], a["num_groups"]
    )[0]


def unsure(row: dict) -> list[str]:
    """Why the rules are unsure on a row (empty: sure), re-derived from the figures they measured."""
    a = row["advice"]
    if "num_groups" not in a:
        return list(a.get("ambiguous", []))
    return ambiguities(a["samples_per_class"], a["probe_source"], a["probe_random"], a["kept"])


def policy_pick(row: dict) -> str | None:
    """What a user following the advice trains: the rules' pick, or the trial's where the rules are unsure."""
    return _trial_pick(row) if unsure(row) and _trial_pick(row) else advised(row)


def best(row: dict) -> tuple[str, float]:
    """The best measured strategy and its mean accuracy; the `+bn` variants are not candidates."""
    names = [s for s in row["cells"] if not s.endswith("+bn")]
    name = max(names, key=lambda s: row["cells"][s]["mean"])
    return name, row["cells"][name]["mean"]


def near_best(row: dict, pick: str | None) -> bool:
    return pick in row["cells"] and row["cells"][pick]["mean"] >= best(row)[1] - NEAR


def _trial_pick(row: dict) -> str | None:
    return (row.get("trial") or {}).get("winner")


def _rows(grid: dict) -> list[dict]:
    return [r for s in grid["settings"] for r in s["rows"]]


def advisor_score(grid: dict | list[dict]) -> dict:
    """Rules, trial, and the rules with the trial where they are unsure, on one grid (or several):
    rows, picks that were the best, picks within NEAR points, seconds."""
    rows = [r for g in (grid if isinstance(grid, list) else [grid]) for r in _rows(g)]
    trials = [r for r in rows if _trial_pick(r)]
    doubtful = [r for r in trials if unsure(r)]

    def mean(values):
        values = list(values)
        return statistics.fmean(values) if values else 0.0

    return {
        "rows": len(rows),
        "rules_best": sum(advised(r) == best(r)[0] for r in rows),
        "rules_near": sum(near_best(r, advised(r)) for r in rows),
        "rules_seconds": mean(r["advice"].get("seconds", 0.0) for r in rows),
        "trials": len(trials),
        "trial_best": sum(_trial_pick(r) == best(r)[0] for r in trials),
        "trial_near": sum(near_best(r, _trial_pick(r)) for r in trials),
        "rules_near_on_trial_rows": sum(near_best(r, advised(r)) for r in trials),
        "trial_seconds": mean(r["trial"]["seconds"] for r in trials),
        "unsure": len(doubtful),
        "policy_near": sum(near_best(r, policy_pick(r)) for r in trials),
        "policy_best": sum(policy_pick(r) == best(r)[0] for r in trials),
        # the probes on every row, plus the trial where the rules were unsure
        "policy_seconds": mean(
            r["advice"].get("seconds", 0.0) + (r["trial"]["seconds"] if unsure(r) else 0.0) for r in trials
        ),
        "run_seconds": mean(c["seconds"] for r in rows for c in r["cells"].values()),
    }


SIZE_SETTINGS = ("latin-cyrillic", "latin-greek", "typed-digits")  # a similar source: the size principles


def principles(grid: dict) -> list[tuple[str, bool, str]]:
    """(claim, held?, the figures behind the verdict) for each principle a grid's settings can test:
    the size principles on each similar-source setting, the domain ones where both MNIST targets are
    there with little data."""
    out = []
    for setting in grid["settings"]:
        first = setting["rows"][0]["samples_per_class"]
        if setting["key"] in SIZE_SETTINGS and isinstance(first, int) and first <= 30:  # little data first
            out += _size_principles(setting)
    by_key = {s["key"]: s for s in grid["settings"]}
    if "mnist-digits" in by_key and "mnist-fashion" in by_key:
        out += _domain_principles(by_key["mnist-digits"]["rows"][0], by_key["mnist-fashion"]["rows"][0])
    return out


def _size_principles(setting: dict) -> list[tuple[str, bool, str]]:
    rows, pair = setting["rows"], f"{setting['source_data']} → {setting['target_data']}"

    def cell(i, strategy):
        return rows[i]["cells"][strategy]["mean"]

    small, large = 0, len(rows) - 1
    n_small, n_large = rows[small]["samples_per_class"], rows[large]["samples_per_class"]
    head, scratch, full = cell(small, "head"), cell(small, "scratch"), cell(small, "full")
    out = [
        (
            f"{pair}, {n_small} per class: with a similar source and little data, a new head on frozen "
            "features beats training from scratch.",
            head > scratch,
            f"head {head:.1f}% vs scratch {scratch:.1f}%",
        ),
        (
            f"{pair}, {n_small} per class: with little data, fine-tuning everything is no better than "
            "training only the head.",
            full <= head + NEAR,
            f"full {full:.1f}% vs head {head:.1f}%",
        ),
    ]
    if large == small:
        return out
    names = [s for s in rows[large]["cells"] if s.startswith("last:") or s in ("full", "gradual")]
    names = [s for s in names if not s.endswith("+bn")]
    deeper, head_l = max(cell(large, s) for s in names), cell(large, "head")
    gain_small = best(rows[small])[1] - cell(small, "scratch")
    gain_large = best(rows[large])[1] - cell(large, "scratch")
    return out + [
        (
            f"{pair}, {n_large} per class: with more data, fine-tuning more layers beats the head alone.",
            deeper > head_l,
            f"best of last:N/full{'/gradual' if 'gradual' in names else ''} {deeper:.1f}% vs head {head_l:.1f}%",
        ),
        (
            f"{pair}: transfer's advantage over scratch shrinks as the target data grows.",
            gain_small > gain_large,
            f"best minus scratch: {gain_small:+.1f} points at {n_small}/class, {gain_large:+.1f} at {n_large}/class",
        ),
    ]


def _domain_principles(d: dict, f: dict) -> list[tuple[str, bool, str]]:
    little = all(isinstance(r["samples_per_class"], int) and r["samples_per_class"] <= 30 for r in (d, f))
    if not little:
        return []
    gd = best(d)[1] - d["cells"]["scratch"]["mean"]
    gf = best(f)[1] - f["cells"]["scratch"]["mean"]
    hf, sf = f["cells"]["head"]["mean"], f["cells"]["scratch"]["mean"]
    others = [s for s in ("last:2", "last:3", "full", "gradual") if s in f["cells"]]
    top = max(f["cells"][s]["mean"] for s in others)
    return [
        (
            "A source from a similar task (digits) helps more than one from a different domain (clothing), "
            "with little data.",
            gd > gf,
            f"best minus scratch: digits {gd:+.1f} points ({d['samples_per_class']}/class), "
            f"fashion {gf:+.1f} points ({f['samples_per_class']}/class)",
        ),
        (
            "From a different domain, frozen features alone (head) fall behind re-training more layers.",
            hf < top,
            f"head {hf:.1f}% vs best of {'/'.join(others)} {top:.1f}% (scratch {sf:.1f}%)",
        ),
    ]


def bn_comparison(grid: dict) -> list[tuple[str, int | str, str, float, float]]:
    """(setting, per class, last:N, frozen-BN accuracy, --train-bn accuracy) where both were measured."""
    out = []
    for setting in grid["settings"]:
        for row in setting["rows"]:
            for name in row["cells"]:
                if name.endswith("+bn") and name.removesuffix("+bn") in row["cells"]:
                    base = name.removesuffix("+bn")
                    frozen, live = row["cells"][base]["mean"], row["cells"][name]["mean"]
                    out.append((setting["key"], row["samples_per_class"], base, frozen, live))
    return out


def _plot(grid: dict, path: Path) -> None:
    """One panel per setting of the grid, side by side: accuracy against images per class, a line per
    strategy (mean ± std over seeds), the legend below; at least ~10 px text at the saved size."""
    settings = grid["settings"]
    cols = min(3, len(settings))
    rows_n = -(-len(settings) // cols)
    strategies = _strategies(settings[0]["rows"][0])
    legend_rows = -(-len(strategies) // 5)
    width, height = 4.4 * cols + 0.4, 3.6 * rows_n + 0.5 + 0.3 * legend_rows
    fig, axes = new_figure(max(width, 7.5), height, nrows=rows_n, ncols=cols, squeeze=False)
    for ax in axes.flat[len(settings) :]:
        ax.axis("off")
    for ax, setting in zip(axes.flat, settings, strict=False):
        rows = setting["rows"]
        for strategy in _strategies(rows[0]):
            means = [r["cells"][strategy]["mean"] for r in rows]
            stds = [r["cells"][strategy]["std"] for r in rows]
            style = "--" if strategy.endswith("+bn") else "-"
            ax.errorbar(
                range(len(rows)), means, yerr=stds, marker="o", ms=4, capsize=3, label=strategy, ls=style
            )
        ax.set_xticks(range(len(rows)), [str(r["samples_per_class"]) for r in rows])
        label_axes(
            ax,
            title=f"{setting['source_data']} → {setting['target_data']}",
            xlabel="training images per class",
            ylabel="test accuracy (%)",
        )
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=SIZES["tick"], frameon=False
    )
    title = (
        f"Transfer study, {grid['name']} grid ({grid['model']}): accuracy by strategy (mean ± std over seeds)"
    )
    save_figure(fig, path, title=title, rect=(0, (0.15 + 0.3 * legend_rows) / height, 1, 1))


def _mark(row: dict, pick: str | None) -> str:
    if not pick:
        return "-"
    verdict = "best" if pick == best(row)[0] else "near" if near_best(row, pick) else "off"
    return f"{pick} ({verdict})"


def _table(setting: dict) -> list[str]:
    names = _strategies(setting["rows"][0])
    lines = [
        "| per class | " + " | ".join(names) + " | rules | trial | best |",
        "|---" * (len(names) + 4) + "|",
    ]
    for row in setting["rows"]:
        best_name = best(row)[0]
        cells = []
        for s in names:
            c = row["cells"][s]
            text = f"{c['mean']:.1f} ± {c['std']:.1f} ({c['seconds']:.1f} s)"
            cells.append(f"**{text}**" if s == best_name else text)
        lines.append(
            f"| {row['samples_per_class']} | "
            + " | ".join(cells)
            + f" | {_mark(row, advised(row))}{', unsure' if unsure(row) else ''} | "
            f"{_mark(row, _trial_pick(row))} | {best_name} |"
        )
    return lines


def _grid_section(grid: dict, out: Path) -> list[str]:
    png = f"{grid['name']}.png"
    _plot(grid, out / png)
    lines = [
        f"## {grid['name'].capitalize()} grid: `{grid['model']}`, {grid['seeds']} seed(s) per cell",
        "",
        GRID_TEXT.get(grid["name"], ""),
        "",
        f"![{grid['name']}]({png})",
        "",
    ]
    for setting in grid["settings"]:
        src = setting["source"]
        source = (
            f"Source: {src['command']}" if src.get("bundled") else f"Source: `{src['command']}`"
        ) + f": {src['accuracy']:.2f}% on its own test split."
        lines += [
            f"### {setting['title']}: {setting['source_data']} → {setting['target_data']}",
            "",
            source,
            "",
            *_table(setting),
            "",
        ]
    return lines


def _score_row(label: str, sc: dict) -> str:
    def frac(k, n):
        return f"{sc[k]}/{sc[n]} ({_pct(sc[k], sc[n])})"

    if sc["trials"]:
        trial = (
            f"{frac('trial_near', 'trials')} | {sc['trial_best']}/{sc['trials']} | "
            f"{frac('policy_near', 'trials')} | {sc['unsure']}/{sc['trials']}"
        )
        secs = f"{sc['rules_seconds']:.1f} | {sc['trial_seconds']:.1f} | {sc['policy_seconds']:.1f}"
    else:
        trial, secs = "not run | - | - | -", f"{sc['rules_seconds']:.1f} | - | -"
    return (
        f"| {label} | {sc['rows']} | {frac('rules_near', 'rows')} | {sc['rules_best']}/{sc['rows']} | {trial} | "
        f"{secs} | {sc['run_seconds']:.1f} |"
    )


def _score_lines(results: dict) -> list[str]:
    lines = [
        "## The advisor against the measurements",
        "",
        f"A pick is *near-best* when its mean accuracy is within {NEAR:.0f} point of the best measured strategy of its "
        "row (`+bn` variants are not candidates). **Rules**: `cnnzoo advise` (probes, then the rule table). "
        "**Trial**: `cnnzoo advise --trial` (successive halving on a validation split carved from the training "
        "images; default budget: 3 fine-tuning runs' worth of steps). **Rules, trial if unsure**: what a user "
        "following the advice trains: the rules' pick, except where the rules say they are unsure (a figure near "
        "a threshold, or a cell of the table whose calibration rows disagreed or were none), where the advice "
        "is to run the trial, and the trial's pick. Seconds: mean per row, this machine: the probes (rules), the "
        "race (trial), the probes plus the race where unsure; and one fine-tuning run.",
        "",
        "| grid | rows | rules near-best | rules best | trial near-best | trial best | rules, trial if unsure: "
        "near-best | unsure | rules s | trial s | rules, trial if unsure s | one run s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for grid in results["grids"]:
        lines.append(_score_row(f"{grid['name']} ({grid['model']})", advisor_score(grid)))
    outside = [g for g in results["grids"] if g["name"] in OUTSIDE]
    together = " + ".join(g["name"] for g in outside)
    if len(outside) > 1:
        lines.append(_score_row(f"**{together}** (lenet5)", advisor_score(outside)))
    checks = ([(outside, f"All held-out rows together ({together})")] if len(outside) > 1 else []) + [
        ([g], f"The {g['name']} grid") for g in outside
    ]
    for grids, label in checks:
        sc = advisor_score(grids)
        verdict = [
            f"{who} near-best in {sc[k]} of {sc[n]} ({_pct(sc[k], sc[n])}): "
            f"{'met' if sc[n] and sc[k] / sc[n] >= 0.8 else '**not met**'}"
            for who, k, n in (
                ("the rules", "rules_near", "rows"),
                ("the trial", "trial_near", "trials"),
                ("the rules with the trial where unsure", "policy_near", "trials"),
            )
            if sc[n]
        ]
        caveat = _caveat(grids)
        lines += [
            "",
            f"{label}{caveat}, against the goal of 80%: " + "; ".join(verdict) + ".",
        ]
    lines += ["", *_sample_lines(results), *_preregistered_lines(results)]
    for grid in outside:
        lines += ["", f"Misses on the {grid['name']} grid:", "", *(_misses(grid) or ["- none"])]
    lines += _picks_lines(results)
    lines += ["", *_refit_lines(results), "", *_example_advice(results)]
    return lines


# Each pre-registered grid scored by the rules committed with it, before it was measured (the rules were
# revised after each but the last, so the report's own tables re-derive the picks with today's rules): the
# record of the advisor out of sample, in the order it was kept. (grid, the rules' commit, near-best, rows)
PREREGISTERED = (
    ("dissimilar", "197daf7", 7, 13),
    ("dissimilar-2", "20a3b90", 6, 8),
    ("dissimilar-3", "6564390", 5, 8),
    ("dissimilar-4", "2d9f898", 6, 10),
    ("dissimilar-5", "22a8883", None, 10),  # the rules as they stand: scored from this run's figures
)


def _preregistered(results: dict) -> list[tuple[str, str, int, int]]:
    """[(grid, the rules' commit, near-best, rows)] of the pre-registered grids this run has."""
    measured = {g["name"]: g for g in results["grids"]}
    rows = []
    for name, commit, near, total in PREREGISTERED:
        if name not in measured:
            continue
        if near is None:
            near, total = advisor_score(measured[name])["rules_near"], len(_rows(measured[name]))
        rows.append((name, commit, near, total))
    return rows


def _preregistered_lines(results: dict) -> list[str]:
    """The out-of-sample record: each pre-registered grid by the rules of its time, and all of them."""
    rows = _preregistered(results)
    if len(rows) < 2:
        return []
    near, total = sum(r[2] for r in rows), sum(r[3] for r in rows)
    return [
        "",
        "Out of sample, strictly: each pre-registered grid scored by the rules committed with it, before it was "
        "measured (the rules were revised after every grid but the last, so the tables above re-derive its picks "
        "with today's rules):",
        "",
        "| grid | the rules of commit | near-best | rows | share |",
        "|---|---|---|---|---|",
        *(f"| {n} | {c} | {k} | {t} | {_pct(k, t)} |" for n, c, k, t in rows),
        f"| **all {len(rows)}, each by the rules of its time** | | {near} | {total} | {_pct(near, total)} |",
    ]


def _caveat(grids: list[dict]) -> str:
    """Which of these unlike grids' rows a rule was changed after (in sample), or that none was."""
    names = [g["name"] for g in grids]
    inside = [n for n in names if n in IN_SAMPLE]
    if inside:
        names = inside[0] if len(inside) == 1 else f"{', '.join(inside[:-1])} and {inside[-1]}"
        whose = "that grid's" if len(inside) == 1 else "those grids'"
        return f" (the {names} rows are in sample for rules changed after them: see {whose} text)"
    if len(names) == 1 and names[0] in UNLIKE_GRIDS:
        return " (the rules as they stand: the rules' picks unchanged since the grid was committed, before it was measured)"
    return ""


def _sample_lines(results: dict) -> list[str]:
    """Plainly: which grids' rows a rule of the advisor was chosen on after they were measured."""
    names = [g["name"] for g in results["grids"]]
    inside = [f"{n} ({IN_SAMPLE[n]})" for n in names if n in IN_SAMPLE]
    outside = [n for n in names if n in OUTSIDE and n not in IN_SAMPLE]
    if not inside or not outside:
        return []
    return [
        "In sample or not: a rule of the advisor was chosen after these grids' rows were measured, so their scores "
        "are in sample for it: "
        + "; ".join(inside)
        + ". Out of sample for the rules as they stand (the rules' picks "
        "unchanged since the grid was committed, before it was measured): " + ", ".join(outside) + "."
    ]


def _refit_lines(results: dict) -> list[str]:
    """The rules in `advise.py` against what `calibrate.fit_rules` chooses on this run's calibration grid."""
    grid = next((g for g in results["grids"] if g["name"] == "calibration"), None)
    rows = [r for r in (_rows(grid) if grid else []) if "num_groups" in r["advice"]]
    if not rows:
        return []
    fit = fit_rules(rows, small=SMALL, large=LARGE, similar_probe=SIMILAR_PROBE)
    diffs = [
        f"{size} data, {'similar' if sim else 'different'}: {TABLE[(size, sim)]} in advise.py, {fit.table[(size, sim)]} here"
        for (size, sim) in TABLE
        if fit.table[(size, sim)] != TABLE[(size, sim)]
    ]
    return [
        "The rules' scratch threshold (`cnnzoo/transfer/advise.py`) was chosen on the calibration grid by "
        "`cnnzoo/transfer/calibrate.py` (scratch below a probe gain, each cell's strategy by near-best count then "
        "mean shortfall, the widest margin among equals), on the calibration cells of the run of commit 57dd9e8 "
        "(its MNIST source trained by the LeNet-5/MNIST recipe of that time) with the probes of this code. Re-fitted "
        f"on this run's calibration grid alone, the procedure chooses scratch below a gain of {fit.scratch_gain:+.1f} "
        f"points (advise.py: {SCRATCH_GAIN:+.1f}) and "
        + ("the same table." if not diffs else "a different table: " + "; ".join(diffs) + ".")
        + f" In sample, those fitted rules pick near-best in {fit.near} of {fit.rows} calibration rows. The table "
        "in advise.py is the same procedure's (`calibrate.refit_table`) on every LeNet-5 row measured before the "
        "dissimilar-5 grid, with the scratch rules as they stand.",
        "",
        f"No threshold was chosen on the deeper grid. Issue 21's rules came one pre-registered grid at a time: the "
        f"unlike-source rule ({UNLIKE_PROBE:.0f}% kept, {SCRATCH_MIN} a class) chosen on the held-out and unseen "
        "rows and scored on the dissimilar grid; a different-features rule (80%, 20 a class) after it, scored on "
        "dissimilar-2; the no-better-than-random rule at every size after that, scored on dissimilar-3; the size "
        f"bands (scratch from {SCRATCH_MIN} a class; from {OWN_FEATURES_MIN}, unless the source adds "
        f"{WORTH_GAIN:.0f} points over random features) and a refitted table on every row measured by then, scored "
        f"on dissimilar-4; the ceiling of random features ({CEILING:.0f}%) and the table refitted on all 73 rows, "
        "scored on dissimilar-5, which no rule was chosen on. Every other held-out row is in sample for some "
        "threshold; the strict record above scores each grid by the rules of its time.",
    ]


def _picks_lines(results: dict) -> list[str]:
    """The dissimilar grids row by row: what the rules measured, what they picked and why, against the best."""
    lines = []
    for grid in results["grids"]:
        if grid["name"] in UNLIKE_GRIDS:
            lines += _picks_table(grid)
    return lines


def _picks_table(grid: dict) -> list[str]:
    lines = [
        "",
        f"The rules' picks on the {grid['name']} grid (gain: the source's probe against random features; kept: "
        "the probe's accuracy over the source's own):",
        "",
        f"| source → target | per class | gain | kept | no better than random? (gain below {SCRATCH_GAIN:+.1f}) | rules | why | best | gap |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for setting in grid["settings"]:
        for row in setting["rows"]:
            a = row["advice"]
            gain = a["probe_source"] - a["probe_random"]
            kept = f"{100 * a['kept']:.0f}%" if a.get("kept") is not None else "-"
            pick, reasons = recommend(
                a["samples_per_class"], a["probe_source"], a["probe_random"], a["kept"], a["num_groups"]
            )  # what `advised` re-derives, with its reasons
            name, top = best(row)
            lines.append(
                f"| {setting['source_data']} → {setting['target_data']} | {row['samples_per_class']} | {gain:+.1f} | "
                f"{kept} | {_no_better(gain)} | {_mark(row, pick)} | {_why(reasons[-1])} | "
                f"{name} {top:.1f}% | {_mean(row, pick) - top:+.1f} |"
            )
    return lines


def _mean(row: dict, strategy: str) -> float:
    """A strategy's mean accuracy on a row (nan where it was not measured)."""
    return row["cells"][strategy]["mean"] if strategy in row["cells"] else float("nan")


def _no_better(gain: float) -> str:
    """Whether the source's features are no better than random ones: measurably (below SCRATCH_GAIN), within
    the probe's noise of them (SCRATCH_GAIN to 0), or better."""
    return "yes" if gain < SCRATCH_GAIN else "within noise" if gain <= 0 else "no"


def _why(reason: str) -> str:
    """The rules' verdict in a few words, for the picks table."""
    if "substantially different source" in reason:
        return "unlike source: scratch"
    if "not worth its bias" in reason:
        return "source not worth its bias: scratch"
    if "train from scratch, the source will not help" in reason:
        return "features below random: scratch"
    return reason.split(":")[0]


def _misses(grid: dict) -> list[str]:
    """The rows where the rules or the trial were off (more than NEAR points below the best), with the gap."""
    lines = []
    for setting in grid["settings"]:
        for row in setting["rows"]:
            name, top = best(row)
            for who, pick in (("rules", advised(row)), ("trial", _trial_pick(row))):
                if pick and not near_best(row, pick):
                    got = _mean(row, pick)
                    lines.append(
                        f"- {who} off: {setting['source_data']} → {setting['target_data']}, "
                        f"{row['samples_per_class']} per class: {pick} {got:.1f}% against {name} {top:.1f}% "
                        f"({got - top:+.1f} points)"
                    )
    return lines


def _example_advice(results: dict) -> list[str]:
    """What `cnnzoo advise --samples-per-class N --trial` printed for the first held-out row."""
    grid = next((g for g in results["grids"] if g["name"] == "held-out"), None)
    if (
        grid is None
        or not grid["settings"]
        or "rounds" not in (grid["settings"][0]["rows"][0].get("trial") or {})
    ):
        return []
    setting, row = grid["settings"][0], grid["settings"][0]["rows"][0]
    a, trial = row["advice"], Trial(**row["trial"])
    command = (
        f"cnnzoo advise --from runs/{setting['source_data'].removeprefix('glyphs-')} --data "
        f"{setting['target_data']} --samples-per-class {row['samples_per_class']} --trial"
    )
    rules = advised(row)
    verdict = "agrees" if trial.winner == rules else f"overrules the rules' {rules}"
    doubts = unsure(row)
    return [
        f"What the advice says, for example (`{command}`; measuring took {a['seconds']:.1f} s, the rules alone "
        f"would have quoted about {a.get('trial_estimate_seconds', 0):.0f} s for the trial, which took "
        f"{trial.seconds:.0f} s):",
        "",
        "```",
        f"recommended strategy: {trial.winner} (by trial)",
        *[f"  - {r}" for r in a.get("reasons", [])],
        *[f"  - {r}" for r in trial.reasons()],
        f"  - the trial {verdict}",
        *([f"  - the rules were unsure: {'; '.join(doubts)}"] if doubts else []),
        "```",
        "",
    ]


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.0f}%" if b else "-"


def _principle_lines(results: dict) -> list[str]:
    lines = ["## Which principles held", ""]
    for grid in results["grids"]:
        verdicts = principles(grid)
        if not verdicts:
            continue
        lines += [f"On the {grid['name']} grid (`{grid['model']}`):", ""]
        for claim, held, figures in verdicts:
            lines.append(f"- {'**Held**' if held else '**Did not hold**'}: {claim} ({figures})")
        lines.append("")
    return lines


def _bn_lines(results: dict) -> list[str]:
    rows = [(g["model"], *r) for g in results["grids"] for r in bn_comparison(g)]
    if not rows:
        return []
    lines = [
        "## Frozen BatchNorm in inference mode against `--train-bn`",
        "",
        "`last:N` keeps the frozen groups' BatchNorm in inference mode (running statistics and affine "
        "parameters as the source learned them); `--train-bn` lets every BatchNorm adapt its statistics and "
        "train its scale and shift.",
        "",
        "| model | setting | per class | strategy | frozen BN | --train-bn | difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, key, n, base, frozen, live in rows:
        lines.append(f"| {model} | {key} | {n} | {base} | {frozen:.1f} | {live:.1f} | {live - frozen:+.1f} |")
    better = sum(frozen > live for *_, frozen, live in rows)
    mean = statistics.fmean(frozen - live for *_, frozen, live in rows)
    lines += [
        "",
        f"Frozen BatchNorm in inference mode scored higher in {better} of {len(rows)} comparisons "
        f"(by {mean:+.1f} points on average).",
    ]
    return [*lines, ""]


def _reproduce_lines(results: dict) -> list[str]:
    """The README's commands for the first calibration row, with the figures of the report's cells."""
    grid = next((g for g in results["grids"] if g["name"] == "calibration"), None)
    if grid is None or not grid["settings"]:
        return []
    setting = grid["settings"][0]
    row, src = setting["rows"][0], setting["source"]
    n = row["samples_per_class"]
    folder = "runs/" + setting["source_data"].removeprefix("glyphs-")
    lines = [
        "## Same command, same figure",
        "",
        "These commands train what the study trained (the same `default_config`, the same recipe, seed 0); "
        "each comment gives the report's seed-0 figure and, in brackets, the cell's mean over seeds.",
        "",
        "```bash",
        f"{src['command']} --out {folder}   # {src['accuracy']:.2f}% on its own test split",
    ]
    for strategy in ("head", "last:2", "scratch"):
        if strategy in row["cells"]:
            cell = row["cells"][strategy]
            seed0 = cell["runs"][0]["accuracy"] if cell.get("runs") else cell["mean"]
            command = f"cnnzoo finetune --from {folder} --data {setting['target_data']} --strategy {strategy}"
            lines.append(
                f"{command}{f' --samples-per-class {n}' if isinstance(n, int) else ''}   "
                f"# {seed0:.1f}% ({cell['mean']:.1f} ± {cell['std']:.1f})"
            )
    lines += ["```", ""]
    check = results.get("reproduced")
    if check:
        printed = check["printed"] if check["printed"] is not None else float("nan")
        verdict = "the same figure" if printed == round(check["cell"], 2) else "**a different figure**"
        lines += [
            f"Checked by the study itself, through the command line, against its own source folder: "
            f"`{check['command']}` printed {printed:.2f}% in {check['seconds']:.0f} s, where the report's "
            f"cell (seed 0) is {check['cell']:.2f}%: {verdict}.",
            "",
        ]
    return lines


SIZING = (
    "- Sized for well under an hour on a 2-core machine shared with other jobs: the calibration grid runs one "
    "seed and leaves out Cyrillic's whole training split (1,080 per class); gradual is measured on the "
    "calibration grid only (the advisor never recommends it); the held-out and unseen grids run two seeds; "
    "ResNet-20 one seed, on targets with small test splits or few classes (typed digits to scans at 5 and 20 "
    "per class; the bundled Latin weights to Greek at 5 only: at 20, one run took 1.5 to 3 minutes here). "
    "kmnist is not available offline, so no pair uses it."
)


def _cell_commits(results: dict) -> dict[str, int]:
    """{commit: fine-tuning runs measured with it}, most first."""
    counts: dict[str, int] = {}
    for grid in results["grids"]:
        for row in _rows(grid):
            for cell in row["cells"].values():
                for run in cell.get("runs", []):
                    commit = run.get("commit") or "an unrecorded commit"
                    counts[commit] = counts.get(commit, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _sizing_lines(results: dict) -> list[str]:
    lines = ["## How this run was sized", ""]
    for grid in results["grids"]:
        rows = sum(len(s["rows"]) for s in grid["settings"])
        lines.append(
            f"- {grid['name']}: `{grid['model']}`, {len(grid['settings'])} source/target pair(s), {rows} rows, "
            f"{grid['seeds']} seed(s), strategies {', '.join(grid['strategies'])}"
            f"{', trial on every row' if grid.get('trial') else ''}."
        )
    trained = set(results.get("sources_trained", []))
    sources = {}
    for grid in results["grids"]:
        for setting in grid["settings"]:
            src = setting["source"]
            if not src.get("bundled"):
                sources[src["command"]] = src
    if sources:
        lines.append(
            "- Sources (trained into the study's work folder, not committed; reused by later runs while their "
            "configuration is the same): "
            + "; ".join(
                f"`{c}` {s['accuracy']:.2f}% in {s.get('train_seconds') or 0:.0f} s "
                f"({'trained by this run' if c in trained else 'trained by an earlier run'})"
                for c, s in sources.items()
            )
            + ". Sources trained by this run are inside its wall time. A source is reused while its "
            "configuration is the same, not its model's code: one trained by an earlier run had that run's code, "
            "and `cnnzoo train` today can differ from it in the last digits where the model's code has changed "
            "since (the `finetune` commands above are checked against the study's own source folder)."
        )
    cache = results.get("cache")
    if cache:
        lines.append(
            f"- Figures (fine-tuning cells, advice, trials): {cache['computed']} measured by this run, "
            f"{cache['reused']} reused from the cache of an earlier run with the same source, target, recipe and "
            "code version (a cell's key is everything that decides its figure)."
        )
    commits = _cell_commits(results)
    if len(commits) > 1 or (commits and next(iter(commits)) != results.get("machine", {}).get("commit")):
        lines.append(
            "- The code each fine-tuning cell was measured with (cached cells keep the commit that measured "
            "them): " + "; ".join(f"{n} cells at {c}" for c, n in commits.items()) + "."
        )
    machine = results.get("machine", {})
    if machine:
        lines.append(
            f"- Machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} cores shared with other jobs, "
            f"{machine.get('threads', '?')} torch thread(s), nice {machine.get('nice', 0)}, torch "
            f"{machine.get('torch', '?')}; load average when it finished: "
            f"{', '.join(map(str, machine.get('load_average') or []))}. Seconds compare strategies within a row "
            "only roughly."
        )
    sizing = [SIZING] if results["preset"] == "full" else []
    return [*lines, *sizing, *results.get("notes", []), ""]


def finding(results: dict) -> tuple[str, str]:
    """(verdict, line) for reports/README.md: the advisor out of sample, then the principles."""
    outside = [g for g in results["grids"] if g["name"] in OUTSIDE]
    verdicts = [held for g in results["grids"] for _, held, _ in principles(g)]
    parts = []
    if outside:
        sc = advisor_score(outside)
        parts.append(
            f"advice on the held-out rows ({sc['rows']} rows{_in_sample_note(outside)}): rules near-best in "
            f"{sc['rules_near']} ({_pct(sc['rules_near'], sc['rows'])}), trial {sc['trial_near']} of {sc['trials']}, "
            f"rules with the trial where unsure {sc['policy_near']} (goal 80%)"
        )
        fresh = [(g["name"], advisor_score(g)) for g in outside if g["name"] not in IN_SAMPLE]
        if len(fresh) < len(outside):  # some rows in sample for a rule: the others' score apart
            parts += [
                f"{name} (out of sample for the rules as they stand, {x['rows']} rows): rules near-best in "
                f"{x['rules_near']} ({_pct(x['rules_near'], x['rows'])})"
                for name, x in fresh
            ]
        record = _preregistered(results)
        if len(record) > 1:
            near, total = sum(r[2] for r in record), sum(r[3] for r in record)
            parts.append(
                f"each pre-registered grid by the rules of its time: {near} of {total} ({_pct(near, total)})"
            )
        met = all(x["rules_near"] >= 0.8 * x["rows"] for x in [sc, *(x for _, x in fresh)])
        goal = "advice: 80% goal met by the rules" if met else "advice: 80% not met"
    else:
        goal = "advice: no held-out grid"
    if verdicts:
        parts.append(f"{sum(verdicts)} of {len(verdicts)} principles held")
    bn = [(frozen, live) for g in results["grids"] for *_, frozen, live in bn_comparison(g)]
    if bn:
        parts.append(f"frozen BatchNorm beat --train-bn in {sum(f > v for f, v in bn)} of {len(bn)}")
    held = "principles held" if verdicts and all(verdicts) else "principles partly held"
    return f"{goal}; {held}", "; ".join(parts)


def _in_sample_note(grids: list[dict]) -> str:
    inside = [g for g in grids if g["name"] in IN_SAMPLE]
    if not inside:
        return ""
    return f"; {sum(len(_rows(g)) for g in inside)} of them in sample for rules changed after them"


def _cache_note(results: dict) -> str:
    """Where most figures came from the cache: how many this run measured, and what all of them cost."""
    cache = results.get("cache") or {}
    if not cache.get("reused"):
        return ""
    total = 0.0
    for grid in results["grids"]:
        for row in _rows(grid):
            total += sum(r["seconds"] for c in row["cells"].values() for r in c.get("runs", []))
            total += row["advice"].get("seconds", 0.0) + ((row.get("trial") or {}).get("seconds") or 0.0)
    return (
        f" (it measured {cache['computed']} figures and reused {cache['reused']} from the cache of earlier runs; "
        f"measuring all of them took {total / 60:.0f} minutes, the sum of their own seconds, sources not included)"
    )


def _command(results: dict) -> str:
    """The command as run: `nice` and OMP_NUM_THREADS where the machine record has them."""
    machine = results.get("machine", {})
    prefix = f"nice -n {machine['nice']} " if machine.get("nice") else ""
    if machine.get("omp_num_threads"):
        prefix += f"{'env ' if prefix else ''}OMP_NUM_THREADS={machine['omp_num_threads']} "
    device = f" --device {results['device']}" if results.get("device", "auto") != "auto" else ""
    measured = results.get("measured")
    if measured:  # run_transfer_study(grids=...): no command line of its own
        seeds = f", seeds={measured['seeds']}" if measured.get("seeds") else ""
        call = f"run_transfer_study(grids={tuple(measured['grids'])!r}{seeds}, device={results['device']!r})"
        return f'{prefix}python -c "from cnnzoo.studies.transfer import run_transfer_study; {call}"'
    return f"{prefix}cnnzoo study transfer{' --quick' if results['preset'] == 'quick' else ''}{device}"


def _measured_note(results: dict) -> str:
    measured = results.get("measured")
    if not measured:
        return ""
    return (
        f" It measured the {', '.join(measured['grids'])} grid(s) only; the other grids' figures are kept from "
        "the results.json of an earlier run (their cells' commits below)."
    )


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    cfg, machine = results["preset_config"], results.get("machine", {})
    recipe = results.get("recipe", {})
    quick = results["preset"] == "quick"
    lines = [
        "# Transfer study: how far back to fine-tune, and how good is the advice",
        "",
        f"Written by `{_command(results)}` in {results['minutes']} minutes{_cache_note(results)}, on "
        f"{machine.get('cpu', 'a CPU')} "
        f"({machine.get('cpus', '?')} cores shared with other jobs, {machine.get('threads', '?')} torch thread(s), "
        f"torch {machine.get('torch', '?')}), cnnzoo at commit {machine.get('commit') or '?'}. Seeds 0 to K-1 "
        "per cell, K per grid as its heading says; the advice and the trial use seed 0."
        + _measured_note(results),
        "",
        "Every cell is what `cnnzoo finetune --from SOURCE --data TARGET --strategy S --samples-per-class N "
        "--seed K` trains (the study adds only `--eval-every 1000`, which skips the per-epoch test passes): "
        f"the recipe (`cnnzoo/transfer/recipe.py`): rates {recipe.get('rates')}, batch {recipe.get('batch_size')}, "
        f"weight decay {recipe.get('weight_decay')}, at least {cfg['min_steps']} steps within 3 to "
        f"{cfg['max_epochs']} epochs, gradual's head phase a third of them. Sources are `cnnzoo train` with "
        "the defaults and the flags shown. Accuracy: the final epoch's, on the target's whole test split "
        "(never used to pick anything); mean ± standard deviation over seeds (each seed also draws its own N "
        "images per class), then the mean wall time.",
        "",
        "Strategies: **scratch** (same network, random weights), **head** (new classifier on cached frozen "
        "features), **last:N** (last N groups + head), **full** (everything), **gradual** (head first, then "
        "everything at lower rates), **+bn** (`--train-bn`).",
        "",
    ]
    if quick:
        lines += [
            "*Quick preset: tiny budgets and sources, a check that every path runs, not a measurement.*",
            "",
        ]
    for grid in results["grids"]:
        lines += _grid_section(grid, out)
    lines += _score_lines(results) + _principle_lines(results) + _bn_lines(results)
    lines += _reproduce_lines(results) + _sizing_lines(results)
    lines += ["Raw numbers, every run: [results.json](results.json).", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
