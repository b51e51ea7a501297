"""The transfer study's report: tables, plots, and which principles the numbers support."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_report", "principles", "advisor_score"]

STRATEGY_ORDER = ("scratch", "head", "last:1", "last:2", "full", "gradual")
NEAR = 1.0  # points: "near-best"


def advised(row: dict) -> str:
    """The advisor's pick for a row, re-derived from the figures it measured (so rule changes re-apply)."""
    from ..transfer.advise import recommend

    a = row["advice"]
    if "num_groups" not in a:
        return a["strategy"]
    return recommend(
        a["samples_per_class"], a["probe_source"], a["probe_random"], a["kept"], a["num_groups"]
    )[0]


def _best(row: dict) -> tuple[str, float]:
    name = max(row["cells"], key=lambda s: row["cells"][s]["mean"])
    return name, row["cells"][name]["mean"]


def advisor_score(results: dict) -> tuple[int, int, int]:
    """(picked the best, picked within NEAR points of the best, number of cases)."""
    best_hits = near_hits = total = 0
    for setting in results["settings"]:
        for row in setting["rows"]:
            pick = advised(row)
            best_name, best_acc = _best(row)
            total += 1
            best_hits += pick == best_name
            near_hits += pick in row["cells"] and row["cells"][pick]["mean"] >= best_acc - NEAR
    return best_hits, near_hits, total


def principles(results: dict) -> list[tuple[str, bool, str]]:
    """(claim, held?, the figures behind the verdict) for each principle the grid can test."""
    out = []
    by_key = {s["key"]: s for s in results["settings"]}

    def cell(key, i, strategy):
        return by_key[key]["rows"][i]["cells"][strategy]["mean"]

    if "latin-cyrillic" in by_key:
        rows = by_key["latin-cyrillic"]["rows"]
        small, large = 0, len(rows) - 1
        n_small, n_large = rows[small]["samples_per_class"], rows[large]["samples_per_class"]
        head, scratch = cell("latin-cyrillic", small, "head"), cell("latin-cyrillic", small, "scratch")
        out.append(
            (
                f"Similar source, little data: a new head on frozen features beats training from scratch "
                f"({n_small} per class).",
                head > scratch,
                f"head {head:.1f}% vs scratch {scratch:.1f}%",
            )
        )
        full = cell("latin-cyrillic", small, "full")
        out.append(
            (
                f"With little data, fine-tuning everything is no better than training only the head ({n_small} per class).",
                full <= head + NEAR,
                f"full {full:.1f}% vs head {head:.1f}%",
            )
        )
        if large != small:
            deeper = max(cell("latin-cyrillic", large, s) for s in ("last:1", "last:2", "full", "gradual"))
            head_l = cell("latin-cyrillic", large, "head")
            out.append(
                (
                    f"With more data ({n_large} per class), fine-tuning more layers beats the head alone.",
                    deeper > head_l,
                    f"best of last:N/full/gradual {deeper:.1f}% vs head {head_l:.1f}%",
                )
            )
            gain_small = _best(rows[small])[1] - cell("latin-cyrillic", small, "scratch")
            gain_large = _best(rows[large])[1] - cell("latin-cyrillic", large, "scratch")
            out.append(
                (
                    "Transfer's advantage over scratch shrinks as the target data grows.",
                    gain_small > gain_large,
                    f"best minus scratch: {gain_small:+.1f} points at {n_small}/class, {gain_large:+.1f} at {n_large}/class",
                )
            )
    if "mnist-digits" in by_key and "mnist-fashion" in by_key:
        d, f = by_key["mnist-digits"]["rows"][0], by_key["mnist-fashion"]["rows"][0]
        gd = _best(d)[1] - d["cells"]["scratch"]["mean"]
        gf = _best(f)[1] - f["cells"]["scratch"]["mean"]
        out.append(
            (
                "A source from a similar task (digits) helps more than one from a different domain (clothing), with little data.",
                gd > gf,
                f"best minus scratch: digits {gd:+.1f} points ({d['samples_per_class']}/class), "
                f"fashion {gf:+.1f} points ({f['samples_per_class']}/class)",
            )
        )
        hf, sf = f["cells"]["head"]["mean"], f["cells"]["scratch"]["mean"]
        out.append(
            (
                "From a different domain, frozen features alone (head) fall behind re-training more layers.",
                hf < max(f["cells"][s]["mean"] for s in ("last:2", "full", "gradual")),
                f"head {hf:.1f}% vs best of last:2/full/gradual "
                f"{max(f['cells'][s]['mean'] for s in ('last:2', 'full', 'gradual')):.1f}% (scratch {sf:.1f}%)",
            )
        )
    return out


def _plot(setting: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = setting["rows"]
    labels = [str(r["samples_per_class"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for strategy in STRATEGY_ORDER:
        means = [r["cells"][strategy]["mean"] for r in rows]
        stds = [r["cells"][strategy]["std"] for r in rows]
        ax.errorbar(range(len(rows)), means, yerr=stds, marker="o", capsize=3, label=strategy)
    ax.set_xticks(range(len(rows)), labels)
    ax.set_xlabel("training images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{setting['source_data']} -> {setting['target_data']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    cfg = results["preset_config"]
    lines = [
        "# Transfer study: how far back to fine-tune",
        "",
        f"Written by `cnnzoo study transfer{' --quick' if results['preset'] == 'quick' else ''}` "
        f"({results['minutes']} minutes on this machine). Model: `{results['model']}`; {results['seeds']} seed(s) per cell; "
        f"sources pre-trained for {cfg['source_epochs']} epochs; each fine-tuning run takes at least {cfg['min_steps']} "
        f"steps of batch {cfg['batch_size']} (3 to {cfg['max_epochs']} epochs). Accuracy is the final epoch's on the "
        "target's whole test split (never used to pick anything); mean ± standard deviation over seeds, then the mean wall time.",
        "",
        "Strategies: **scratch** (same network, random weights), **head** (new classifier on cached frozen features), "
        "**last:N** (last N groups + head), **full** (everything), **gradual** (head first, then everything at lower rates).",
        "",
    ]
    for setting in results["settings"]:
        png = f"{setting['key']}.png"
        _plot(setting, out / png)
        lines += [
            f"## {setting['title']}: {setting['source_data']} → {setting['target_data']}",
            "",
            f"Source accuracy on its own test split: {setting['source_accuracy']:.2f}%.",
            "",
            "| per class | " + " | ".join(STRATEGY_ORDER) + " | advisor | best |",
            "|---" * (len(STRATEGY_ORDER) + 3) + "|",
        ]
        for row in setting["rows"]:
            best_name, best_acc = _best(row)
            cells = []
            for s in STRATEGY_ORDER:
                c = row["cells"][s]
                text = f"{c['mean']:.1f} ± {c['std']:.1f} ({c['seconds']:.1f} s)"
                cells.append(f"**{text}**" if s == best_name else text)
            pick = advised(row)
            mark = (
                "best"
                if pick == best_name
                else ("near" if row["cells"].get(pick, {}).get("mean", -1) >= best_acc - NEAR else "off")
            )
            lines.append(
                f"| {row['samples_per_class']} | " + " | ".join(cells) + f" | {pick} ({mark}) | {best_name} |"
            )
        lines += ["", f"![{setting['key']}]({png})", ""]
    best_hits, near_hits, total = advisor_score(results)
    lines += [
        "## The advisor against the measurements",
        "",
        f"`cnnzoo advise` picked the best measured strategy in {best_hits} of {total} cases, and the best or a "
        f"near-best one (within {NEAR:.0f} point) in {near_hits} of {total}.",
        "",
        "Caveat: the advisor's thresholds (`cnnzoo/transfer/advise.py`) were adjusted after a first run of "
        "this grid, whose numbers are the ones shown; the score above is an in-sample fit, not a held-out test. "
        "Its first rules (a head for any little data with useful features) picked near-best in 4 of 10.",
        "",
        "## Which principles held",
        "",
    ]
    for claim, held, figures in principles(results):
        lines.append(f"- {'**Held**' if held else '**Did not hold**'}: {claim} ({figures})")
    lines += ["", "Raw numbers, every run: [results.json](results.json).", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
