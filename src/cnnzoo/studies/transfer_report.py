"""The transfer study's report: tables, plots, the advisor scored in and out of sample, trial against rules,
which principles held on LeNet-5 and whether they carry over to ResNet-20, and frozen against live BatchNorm."""

from __future__ import annotations

import statistics
from pathlib import Path

__all__ = [
    "write_report",
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
    "held-out": "No threshold was ever chosen on these rows: the advisor's score here is out of sample.",
    "deeper": "A deeper network, its stem and three stages as groups: do LeNet-5's lessons and the advisor's "
    "rules carry over?",
}


def _strategies(row: dict) -> list[str]:
    return sorted(row["cells"], key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))


def advised(row: dict) -> str:
    """The rules' pick for a row, re-derived from the figures they measured (so rule changes re-apply)."""
    from ..transfer.advise import recommend

    a = row["advice"]
    if "num_groups" not in a:
        return a["strategy"]
    return recommend(
        a["samples_per_class"], a["probe_source"], a["probe_random"], a["kept"], a["num_groups"]
    )[0]


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


def advisor_score(grid: dict) -> dict:
    """Rules and trial on one grid: rows, picks that were the best, picks within NEAR points, seconds."""
    rows = _rows(grid)
    trials = [r for r in rows if _trial_pick(r)]
    return {
        "rows": len(rows),
        "rules_best": sum(advised(r) == best(r)[0] for r in rows),
        "rules_near": sum(near_best(r, advised(r)) for r in rows),
        "rules_seconds": statistics.fmean(r["advice"].get("seconds", 0.0) for r in rows) if rows else 0.0,
        "trials": len(trials),
        "trial_best": sum(_trial_pick(r) == best(r)[0] for r in trials),
        "trial_near": sum(near_best(r, _trial_pick(r)) for r in trials),
        "rules_near_on_trial_rows": sum(near_best(r, advised(r)) for r in trials),
        "trial_seconds": statistics.fmean(r["trial"]["seconds"] for r in trials) if trials else 0.0,
        "run_seconds": statistics.fmean(c["seconds"] for r in rows for c in r["cells"].values())
        if rows
        else 0.0,
    }


SIZE_SETTINGS = ("latin-cyrillic", "latin-greek", "typed-digits")  # a similar source: the size principles


def principles(grid: dict) -> list[tuple[str, bool, str]]:
    """(claim, held?, the figures behind the verdict) for each principle a grid's settings can test:
    the size principles on each similar-source setting, the domain ones where both MNIST targets are
    there with little data."""
    out = []
    for setting in grid["settings"]:
        if setting["key"] in SIZE_SETTINGS:
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


def _plot(setting: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = setting["rows"]
    labels = [str(r["samples_per_class"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for strategy in _strategies(rows[0]):
        means = [r["cells"][strategy]["mean"] for r in rows]
        stds = [r["cells"][strategy]["std"] for r in rows]
        style = "--" if strategy.endswith("+bn") else "-"
        ax.errorbar(
            range(len(rows)), means, yerr=stds, marker="o", capsize=3, label=strategy, linestyle=style
        )
    ax.set_xticks(range(len(rows)), labels)
    ax.set_xlabel("training images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
            + f" | {_mark(row, advised(row))} | {_mark(row, _trial_pick(row))} | {best_name} |"
        )
    return lines


def _grid_section(grid: dict, out: Path) -> list[str]:
    lines = [
        f"## {grid['name'].capitalize()} grid: `{grid['model']}`, {grid['seeds']} seed(s) per cell",
        "",
        GRID_TEXT.get(grid["name"], ""),
        "",
    ]
    for setting in grid["settings"]:
        png = f"{grid['name']}-{setting['key']}.png"
        title = f"{grid['model']}: {setting['source_data']} -> {setting['target_data']}"
        _plot(setting, out / png, title)
        src = setting["source"]
        lines += [
            f"### {setting['title']}: {setting['source_data']} → {setting['target_data']}",
            "",
            f"Source: `{src['command']}`: {src['accuracy']:.2f}% on its own test split.",
            "",
            *_table(setting),
            "",
            f"![{grid['name']}-{setting['key']}]({png})",
            "",
        ]
    return lines


def _score_lines(results: dict) -> list[str]:
    lines = [
        "## The advisor against the measurements",
        "",
        f"A pick is *near-best* when its mean accuracy is within {NEAR:.0f} point of the best measured strategy of its "
        "row (`+bn` variants are not candidates). **Rules**: `cnnzoo advise` (probes, then the rule table). "
        "**Trial**: `cnnzoo advise --trial` (successive halving on a validation split carved from the training "
        "images; default budget: 3 fine-tuning runs' worth of steps). Seconds: mean per row, this machine.",
        "",
        "| grid | rows | rules near-best | rules best | rules s | trial near-best | trial best | trial s | one run s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for grid in results["grids"]:
        sc = advisor_score(grid)
        trial = (
            f"{sc['trial_near']}/{sc['trials']} ({_pct(sc['trial_near'], sc['trials'])}) | "
            f"{sc['trial_best']}/{sc['trials']} | {sc['trial_seconds']:.1f}"
            if sc["trials"]
            else "not run | - | -"
        )
        lines.append(
            f"| {grid['name']} ({grid['model']}) | {sc['rows']} | {sc['rules_near']}/{sc['rows']} "
            f"({_pct(sc['rules_near'], sc['rows'])}) | {sc['rules_best']}/{sc['rows']} | {sc['rules_seconds']:.1f} | "
            f"{trial} | {sc['run_seconds']:.1f} |"
        )
    held = next((g for g in results["grids"] if g["name"] == "held-out"), None)
    if held is not None:
        sc = advisor_score(held)
        goal = sc["rows"] and sc["rules_near"] / sc["rows"] >= 0.8
        trial_goal = sc["trials"] and sc["trial_near"] / sc["trials"] >= 0.8
        lines += [
            "",
            f"Out of sample (held-out grid), the rules picked near-best in {sc['rules_near']} of {sc['rows']} rows "
            f"({_pct(sc['rules_near'], sc['rows'])}): the goal of 80% was {'met' if goal else '**not met**'} by "
            f"the rules; the trial picked near-best in {sc['trial_near']} of {sc['trials']} "
            f"({_pct(sc['trial_near'], sc['trials'])}): {'met' if trial_goal else '**not met**'} by trial.",
            "",
            *_misses(held),
        ]
    lines += [
        "",
        "The calibration score is in sample: the rules' thresholds (`cnnzoo/transfer/advise.py`) were chosen on "
        "an earlier run of that grid and not changed since (this run re-measures it with the recipe and sources "
        "trained by `cnnzoo train`'s defaults). No threshold was chosen on the held-out or deeper grids.",
        "",
        *_example_advice(results),
    ]
    return lines


def _misses(grid: dict) -> list[str]:
    """The rows where the rules or the trial were off (more than NEAR points below the best), with the gap."""
    lines = []
    for setting in grid["settings"]:
        for row in setting["rows"]:
            name, top = best(row)
            for who, pick in (("rules", advised(row)), ("trial", _trial_pick(row))):
                if pick and not near_best(row, pick):
                    got = row["cells"][pick]["mean"] if pick in row["cells"] else float("nan")
                    lines.append(
                        f"- {who} off: {setting['source_data']} → {setting['target_data']}, "
                        f"{row['samples_per_class']} per class: {pick} {got:.1f}% against {name} {top:.1f}% "
                        f"({got - top:+.1f} points)"
                    )
    return lines


def _example_advice(results: dict) -> list[str]:
    """What `cnnzoo advise --samples-per-class N --trial` printed for the first held-out row."""
    grid = next((g for g in results["grids"] if g["name"] == "held-out"), None)
    if grid is None or not grid["settings"] or not grid["settings"][0]["rows"][0].get("trial"):
        return []
    setting, row = grid["settings"][0], grid["settings"][0]["rows"][0]
    a = row["advice"]
    command = (
        f"cnnzoo advise --from runs/{setting['source_data'].removeprefix('glyphs-')} --data "
        f"{setting['target_data']} --samples-per-class {row['samples_per_class']} --trial"
    )
    return [
        f"What the advice says, for example (`{command}`; measuring took {a['seconds']:.1f} s, the rules alone "
        f"would have quoted about {a.get('trial_estimate_seconds', 0):.0f} s for the trial, which took "
        f"{row['trial']['seconds']:.0f} s):",
        "",
        "```",
        f"recommended strategy: {row['trial']['winner']} (by trial)",
        *[f"  - {r}" for r in a.get("reasons", [])],
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
    return [*lines, "```", ""]


def _sizing_lines(results: dict) -> list[str]:
    lines = ["## How this run was sized", ""]
    for grid in results["grids"]:
        rows = sum(len(s["rows"]) for s in grid["settings"])
        lines.append(
            f"- {grid['name']}: `{grid['model']}`, {len(grid['settings'])} source/target pair(s), {rows} rows, "
            f"{grid['seeds']} seed(s), strategies {', '.join(grid['strategies'])}"
            f"{', trial on every row' if grid.get('trial') else ''}."
        )
    sources = {}
    for grid in results["grids"]:
        for setting in grid["settings"]:
            src = setting["source"]
            sources[src["command"]] = src
    if sources:
        lines.append(
            "- Sources (trained once into OUT/sources/, reused while their configuration is the same; not "
            "committed): "
            + "; ".join(
                f"`{c}` {s['accuracy']:.2f}% in {s.get('train_seconds') or 0:.0f} s"
                for c, s in sources.items()
            )
            + "."
        )
    machine = results.get("machine", {})
    if machine.get("load_average"):
        lines.append(f"- Load average when it finished: {', '.join(map(str, machine['load_average']))}.")
    return [*lines, *results.get("notes", []), ""]


def _command(results: dict) -> str:
    """The command as run: `nice` and OMP_NUM_THREADS where the machine record has them."""
    machine = results.get("machine", {})
    prefix = f"nice -n {machine['nice']} " if machine.get("nice") else ""
    if machine.get("omp_num_threads"):
        prefix += f"{'env ' if prefix else ''}OMP_NUM_THREADS={machine['omp_num_threads']} "
    return f"{prefix}cnnzoo study transfer{' --quick' if results['preset'] == 'quick' else ''}"


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    cfg, machine = results["preset_config"], results.get("machine", {})
    recipe = results.get("recipe", {})
    quick = results["preset"] == "quick"
    lines = [
        "# Transfer study: how far back to fine-tune, and how good is the advice",
        "",
        f"Written by `{_command(results)}` in "
        f"{results['minutes']} minutes ({machine.get('cpus', '?')} CPU cores shared with other jobs, "
        f"{machine.get('threads', '?')} torch thread(s), torch {machine.get('torch', '?')}).",
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
