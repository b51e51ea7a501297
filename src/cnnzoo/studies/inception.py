"""`cnnzoo study inception`: one Inception module taken apart, and GoogLeNet's size against AlexNet's.

C. Szegedy et al., "Going deeper with convolutions", CVPR 2015 (arXiv:1409.4842, 2014).

1. Module inception3a (Table 1: 192 in; 64 | 96 -> 128 | 16 -> 32 | pool -> 32) at its place in the network
   (28x28): parameters, MACs and output channels of each branch, from `cnnzoo.summary`.
2. The 1x1 reductions: the same module without them (the paper's Fig. 2a "naive" module: 3x3 and 5x5
   straight on the 192 input channels, the pool branch passed through unprojected) against Fig. 2b,
   for one module and stacked through the nine of Table 1, where the naive pool branch makes the channels
   grow block after block. Forward time of both, measured.
3. Concatenation: the output has the sum of the branch widths; each Table 1 block reads what the previous
   one wrote.
4. Receptive field of every branch, computed by the summary's tracer and measured by the input gradient
   of one output unit; also for cnnzoo's `googlenet`, whose "5x5" branch is a 3x3 (torchvision's layout).
5. GoogLeNet's parameters against AlexNet's: the paper's "12 times fewer".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..models import count_params, create_model
from ..models.googlenet import INCEPTION_CFG, Inception
from ..summary import summarize
from . import _md as md
from ._common import (
    StudyRun,
    computed_rf,
    load_results,
    measured_rf,
    provenance_lines,
    pyplot,
    save_figure,
    study_runner,
    write_readme,
)
from ._registry import Study, register_study

__all__ = ["run_inception_study", "rewrite_report", "PaperInception", "PRESETS", "branch_costs"]

NAME = "inception"
# "Our GoogLeNet submission to ILSVRC 2014 actually uses 12 times fewer parameters than the winning
# architecture of Krizhevsky et al. from two years ago": Szegedy et al. 2014, sec. 1.
PAPER_RATIO = 12
# "GoogLeNet employed only 5 million parameters, which represented a 12x reduction with respect to its
# predecessor AlexNet, which used 60 million parameters": Szegedy et al. 2015 (Inception v3 paper), sec. 1.
PAPER_GOOGLENET_PARAMS, PAPER_ALEXNET_PARAMS = 5_000_000, 60_000_000
MODULE = "inception3a"
SIDE = {  # the spatial side each Table 1 block runs at, for a 224x224 input
    "inception3a": 28, "inception3b": 28, "inception4a": 14, "inception4b": 14, "inception4c": 14,
    "inception4d": 14, "inception4e": 14, "inception5a": 7, "inception5b": 7,
}  # fmt: skip
BRANCHES = ("1x1", "3x3", "5x5", "pool")


@dataclass(frozen=True)
class Preset:
    timing_batch: int  # images per timed forward pass of one module
    timing_repeats: int
    rf_trials: int  # random inputs whose gradient supports are united


PRESETS = {
    "full": Preset(timing_batch=32, timing_repeats=5, rf_trials=8),
    "quick": Preset(timing_batch=16, timing_repeats=3, rf_trials=4),
    "tiny": Preset(timing_batch=2, timing_repeats=1, rf_trials=2),
}


def _conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU())


class PaperInception(nn.Module):
    """The paper's module: Fig. 2b (`reduce=True`, 1x1 reductions before the 3x3 and 5x5 and after the
    pool) or Fig. 2a (`reduce=False`). Convolutions with biases and ReLUs, no BatchNorm (the paper predates it)."""

    def __init__(
        self,
        in_chs: int,
        c1: int,
        c3_red: int,
        c3: int,
        c5_red: int,
        c5: int,
        pool_proj: int,
        reduce: bool = True,
    ):
        super().__init__()
        self.branch1 = _conv(in_chs, c1, 1)
        pool = nn.MaxPool2d(3, stride=1, padding=1)
        if reduce:
            self.branch2 = nn.Sequential(_conv(in_chs, c3_red, 1), _conv(c3_red, c3, 3))
            self.branch3 = nn.Sequential(_conv(in_chs, c5_red, 1), _conv(c5_red, c5, 5))
            self.branch4 = nn.Sequential(pool, _conv(in_chs, pool_proj, 1))
        else:
            self.branch2, self.branch3, self.branch4 = _conv(in_chs, c3, 3), _conv(in_chs, c5, 5), pool

    def branches(self) -> list[nn.Module]:
        return [self.branch1, self.branch2, self.branch3, self.branch4]

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, sum of the branch widths, H, W)
        return torch.cat([b(x) for b in self.branches()], 1)


def _branches(module: nn.Module) -> list[nn.Module]:
    return [module.branch1, module.branch2, module.branch3, module.branch4]


def branch_costs(module: nn.Module, in_chs: int, side: int, rf_trials: int = 0) -> dict:
    """Per branch: parameters, MACs per image, output channels, receptive field (computed, measured)."""
    size = (in_chs, side, side)
    rows = {}
    for name, branch in zip(BRANCHES, _branches(module), strict=True):
        s = summarize(branch, size)
        out_chs = branch(torch.zeros(1, *size)).shape[1]
        row = {
            "params": s.total_params,
            "macs": s.total_macs,
            "channels": out_chs,
            "rf": list(computed_rf(branch, size)),
        }
        if rf_trials:
            row["rf_measured"] = list(measured_rf(branch, size, trials=rf_trials))
        rows[name] = row
    whole = summarize(module, size)
    total = {
        "params": whole.total_params,
        "macs": whole.total_macs,
        "channels": module(torch.zeros(1, *size)).shape[1],
        "rf": list(computed_rf(module, size)),
    }
    if rf_trials:
        total["rf_measured"] = list(measured_rf(module, size, trials=rf_trials))
    return {"branches": rows, "total": total}


def _conv_cost(cin: int, cout: int, k: int, side: int) -> tuple[int, int]:
    """(parameters with bias, MACs per image) of a k x k convolution keeping a side x side map."""
    return cout * (cin * k * k + 1), side * side * cout * cin * k * k


def stack(reduce: bool) -> list[dict]:
    """The nine Table 1 blocks stacked, with or without the 1x1 reductions: channels in and out, params, MACs.

    Without reductions the pool branch passes its input through, so the next block reads more channels.
    The arithmetic is `_conv_cost`'s; the test checks it against `summarize` on inception3a.
    """
    rows, in_chs = [], INCEPTION_CFG["inception3a"][0]
    for name, (_, c1, c3r, c3, c5r, c5, pp) in INCEPTION_CFG.items():
        side = SIDE[name]
        if reduce:
            convs = [
                (in_chs, c1, 1),
                (in_chs, c3r, 1),
                (c3r, c3, 3),
                (in_chs, c5r, 1),
                (c5r, c5, 5),
                (in_chs, pp, 1),
            ]
            out = c1 + c3 + c5 + pp
        else:
            convs = [(in_chs, c1, 1), (in_chs, c3, 3), (in_chs, c5, 5)]
            out = c1 + c3 + c5 + in_chs
        costs = [_conv_cost(a, b, k, side) for a, b, k in convs]
        rows.append(
            {
                "block": name,
                "side": side,
                "in": in_chs,
                "out": out,
                "params": sum(p for p, _ in costs),
                "macs": sum(m for _, m in costs),
            }
        )
        in_chs = out if not reduce else INCEPTION_CFG.get(_next(name), (out,))[0]
    return rows


def _next(name: str) -> str:
    names = list(INCEPTION_CFG)
    i = names.index(name)
    return names[i + 1] if i + 1 < len(names) else ""


def _forward_ms(
    modules: dict[str, nn.Module], in_chs: int, side: int, batch: int, repeats: int
) -> dict[str, float]:
    """ms per image of a forward pass of each module: the best of `repeats` rounds, the modules taking
    turns within a round, so a burst of load on the shared machine hits them alike."""
    x = torch.randn(batch, in_chs, side, side)
    best = dict.fromkeys(modules, float("inf"))
    with torch.no_grad():
        for m in modules.values():
            m.eval()
            m(x)  # warm-up
        for _ in range(repeats):
            for key, m in modules.items():
                t = time.perf_counter()
                m(x)
                best[key] = min(best[key], time.perf_counter() - t)
    return {k: 1000 * v / batch for k, v in best.items()}


def _paper_googlenet_params(model: nn.Module) -> dict:
    """GoogLeNet's parameters as the paper built it, from cnnzoo's model: every conv with a bias instead of
    BatchNorm, and each block's "5x5" branch with 5x5 kernels (cnnzoo keeps torchvision's 3x3)."""
    total, fc = 0, 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight.numel()
            if name.endswith("branch3.1.conv"):  # a 3x3 standing in for the paper's 5x5
                w = w // 9 * 25
            total += w + m.out_channels
        elif isinstance(m, nn.Linear):
            total += m.weight.numel() + m.bias.numel()
            fc += m.weight.numel() + m.bias.numel() if name == "fc" else 0
    return {"params": total, "without_classifier": total - fc}


def sizes() -> dict:
    """Parameter counts of GoogLeNet and AlexNet (built on the meta device: shapes only, no memory)."""
    with torch.device("meta"):
        google = create_model("googlenet", aux_logits=False)
        return {
            "googlenet": count_params(google),
            "googlenet_with_aux": count_params(create_model("googlenet")),
            "googlenet_paper_layers": _paper_googlenet_params(google),
            "alexnet2012": count_params(create_model("alexnet2012")),
            "alexnet": count_params(create_model("alexnet")),
        }


def _measure(run: StudyRun, out: Path, device: str) -> None:
    """No training here: `seeds` and `device` are accepted for the common study signature and unused."""
    p, results = run.preset, run.results
    cfg = INCEPTION_CFG[MODULE]
    in_chs, side = cfg[0], SIDE[MODULE]
    torch.manual_seed(0)
    modules = {
        "reduced": PaperInception(*cfg, reduce=True),
        "naive": PaperInception(*cfg, reduce=False),
        "cnnzoo googlenet": Inception(*cfg),
    }
    results["module"] = {"name": MODULE, "config": list(cfg), "side": side}
    results["variants"] = {}
    times = _forward_ms(modules, in_chs, side, p.timing_batch, p.timing_repeats)
    for key, module in modules.items():
        results["variants"][key] = {
            **branch_costs(module, in_chs, side, p.rf_trials),
            "forward_ms_per_image": times[key],
        }
    results["stack"] = {"reduced": stack(True), "naive": stack(False)}
    results["sizes"] = sizes()
    results["gradient_maps"] = _gradient_maps(modules["reduced"], in_chs, side)


def _gradient_maps(module: PaperInception, in_chs: int, side: int) -> dict:
    """|d unit / d input| summed over input channels, for each branch's centre unit: the measured fields."""
    maps = {}
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, in_chs, side, side, generator=gen)
    for name, branch in zip(BRANCHES, module.branches(), strict=True):
        x = x0.clone().requires_grad_(True)
        y = branch(x)
        y[0, :, side // 2, side // 2].sum().backward()
        g = x.grad[0].abs().sum(0)
        c = side // 2
        maps[name] = g[c - 4 : c + 5, c - 4 : c + 5].tolist()  # 9x9 around the centre
    return maps


def rewrite_report(out: str | Path = "reports/inception") -> Path:
    return write_report(load_results(out, NAME), Path(out))


# --- the report ---------------------------------------------------------------------------------------


def _plots(results: dict, out: Path) -> None:
    _plot_branches(results["variants"], out / "branches.png")
    _plot_stack(results["stack"], out / "stack.png")
    _plot_gradient_maps(results["gradient_maps"], out / "receptive_fields.png")


def _plot_branches(v: dict, path: Path) -> None:
    """Parameters and MACs per branch of inception3a, with and without the 1x1 reductions."""
    fig, axes = pyplot().subplots(1, 2, figsize=(9, 3.6), dpi=100)
    xs = range(len(BRANCHES))
    for ax, key, unit, scale in (
        (axes[0], "params", "parameters (thousands)", 1e3),
        (axes[1], "macs", "MACs per image (millions)", 1e6),
    ):
        for i, variant in enumerate(("naive", "reduced")):
            vals = [v[variant]["branches"][b][key] / scale for b in BRANCHES]
            ax.bar(
                [x + (i - 0.5) * 0.4 for x in xs],
                vals,
                0.4,
                label=f"{variant} (total {v[variant]['total'][key] / scale:,.0f})",
            )
        ax.set_xticks(list(xs), [f"{b} branch" for b in BRANCHES])
        ax.set_ylabel(unit)
        ax.set_xlabel("branch of inception3a")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    axes[0].set_title("parameters per branch")
    axes[1].set_title("MACs per branch (28x28 map)")
    fig.suptitle("inception3a with (Fig. 2b) and without (Fig. 2a) the 1x1 reductions", fontsize=10)
    save_figure(fig, path)


def _plot_stack(stack: dict, path: Path) -> None:
    """Channels and MACs of the nine blocks of Table 1, with and without the 1x1 reductions."""
    fig, axes = pyplot().subplots(1, 2, figsize=(9, 3.6), dpi=100)
    for variant, style in (("naive", "o--"), ("reduced", "s-")):
        rows = stack[variant]
        names = [r["block"].replace("inception", "") for r in rows]
        axes[0].plot(names, [r["out"] for r in rows], style, label=variant)
        axes[1].plot(names, [r["macs"] / 1e6 for r in rows], style, label=variant)
    axes[0].set_ylabel("output channels")
    axes[1].set_ylabel("MACs per image (millions, log scale)")
    axes[1].set_yscale("log")
    for ax, title in zip(axes, ("channels after concatenation", "cost of each block"), strict=True):
        ax.set_xlabel("Table 1 block")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        "The nine Inception blocks stacked, with and without 1x1 reductions (224x224 input)", fontsize=10
    )
    save_figure(fig, path)


def _plot_gradient_maps(maps: dict, path: Path) -> None:
    """Each branch's measured receptive field: the input pixels one output unit's gradient reaches."""
    fig, axes = pyplot().subplots(1, len(maps), figsize=(2.4 * len(maps), 3.1), dpi=100)
    for ax, (name, g) in zip(axes, maps.items(), strict=True):
        t = torch.tensor(g)
        ax.imshow((t > 0).numpy(), cmap="Greys", vmin=0, vmax=1)
        ax.set_title(f"{name} branch", fontsize=9)
        ax.set_xlabel("input column (px, centre ±4)")
        ax.set_xticks([0, 4, 8], ["-4", "0", "+4"])
        ax.set_yticks([0, 4, 8], ["-4", "0", "+4"])
    axes[0].set_ylabel("input row (px)")
    fig.suptitle(
        "Measured receptive fields: input pixels with a non-zero gradient of one output unit (black)",
        fontsize=9,
    )
    save_figure(fig, path)


def _rf(r: dict, key: str) -> str:
    v = r.get(key)
    return "-" if v is None else (v if isinstance(v, str) else "x".join(str(a) for a in v))


def write_report(results: dict, out: Path) -> Path:
    out = Path(out)
    cfg, module = results["module"]["config"], results["module"]
    lines = md.document(
        "Inception: one module taken apart",
        provenance_lines(results),
        f"No training: every figure is counted or measured on the modules. Module `{module['name']}` "
        f"(Table 1: {cfg[0]} input channels; 1x1: {cfg[1]}; 3x3 reduce {cfg[2]} -> 3x3 {cfg[3]}; 5x5 reduce {cfg[4]} "
        f"-> 5x5 {cfg[5]}; pool proj {cfg[6]}) on its {module['side']}x{module['side']} map. "
        "`reduced` and `naive` are the paper's Fig. 2b and 2a (convolutions with biases, no BatchNorm); "
        "`cnnzoo googlenet` is the block of `cnnzoo.models.googlenet` (torchvision's layout: BatchNorm, and a "
        "3x3 where the paper has 5x5).",
        _branches_section(results),
        _stack_section(results),
        _sizes_section(results),
        "Raw numbers: [results.json](results.json).",
    )
    _plots(results, out)
    return write_readme(out, lines)


def _branch_table(variant: dict) -> list[str]:
    """One variant's branches, then the module in bold: parameters, MACs, channels, receptive fields."""
    rows = []
    for name, r in [*((b, variant["branches"][b]) for b in BRANCHES), ("**module**", variant["total"])]:
        cells = [f"{r['params']:,}", f"{r['macs'] / 1e6:.1f} M", r["channels"]]
        if r is variant["total"]:
            cells = [f"**{c}**" for c in cells]
        rows.append([name, *cells, _rf(r, "rf"), _rf(r, "rf_measured")])
    return md.table(
        ["branch", "parameters", "MACs/image", "out channels", "RF computed", "RF measured"], rows
    )


def _branches_section(results: dict) -> list[str]:
    v, cfg = results["variants"], results["module"]["config"]
    red, naive = v["reduced"]["total"], v["naive"]["total"]
    agree = all(
        _rf(r, "rf") == _rf(r, "rf_measured")
        for key in v
        for r in [*v[key]["branches"].values(), v[key]["total"]]
        if "rf_measured" in r
    )
    b3 = v["cnnzoo googlenet"]["branches"]["5x5"]

    def widths(key: str) -> str:
        return " + ".join(str(v[key]["branches"][b]["channels"]) for b in BRANCHES)

    tables = [
        md.join(
            f"**{key}** (forward {v[key]['forward_ms_per_image']:.2f} ms per image, measured)",
            _branch_table(v[key]),
        )
        for key in ("reduced", "naive", "cnnzoo googlenet")
    ]
    return md.section(
        "Branches: parameters, MACs, channels, receptive fields",
        *tables,
        md.bullets(
            [
                f"**The 1x1 reductions**: without them the module has {naive['params'] / red['params']:.1f}x the "
                f"parameters ({naive['params']:,} vs {red['params']:,}) and {naive['macs'] / red['macs']:.1f}x the MACs "
                f"({naive['macs'] / 1e6:.0f} M vs {red['macs'] / 1e6:.0f} M per image); forward time "
                f"{v['naive']['forward_ms_per_image'] / v['reduced']['forward_ms_per_image']:.1f}x. The 5x5 branch "
                f"alone: {v['naive']['branches']['5x5']['params']:,} parameters without its 1x1 reduction, "
                f"{v['reduced']['branches']['5x5']['params']:,} with it.",
                f"**Concatenation** stacks the branches along channels: {widths('reduced')} = {red['channels']} output "
                f"channels (naive: {widths('naive')} = {naive['channels']}: the unprojected pool branch carries all "
                f"{cfg[0]} input channels along).",
                f"**Receptive fields**: computed and measured agree for every branch: {'yes' if agree else 'NO'}. "
                "The module's field is its widest branch's (the branches are centred on the same pixel). "
                f'cnnzoo\'s `googlenet` "5x5" branch measures {_rf(b3, "rf_measured")}: it is a 3x3, as in '
                "torchvision's port of the TensorFlow weights (pytorch/vision issue #906).",
            ]
        ),
        md.figure("branches.png"),
        md.figure("receptive_fields.png", "receptive fields"),
    )


def _stack_section(results: dict) -> list[str]:
    reduced, naive = results["stack"]["reduced"], results["stack"]["naive"]
    rows = [
        [
            r["block"],
            f"{r['side']}x{r['side']}",
            f"{r['in']} -> {r['out']}",
            f"{r['params']:,}",
            f"{r['macs'] / 1e6:.0f} M",
            f"{n['in']} -> {n['out']}",
            f"{n['params']:,}",
            f"{n['macs'] / 1e6:.0f} M",
        ]
        for r, n in zip(reduced, naive, strict=True)
    ]
    sr, sn = sum(r["params"] for r in reduced), sum(r["params"] for r in naive)
    mr, mn = sum(r["macs"] for r in reduced), sum(r["macs"] for r in naive)
    return md.section(
        "Stacked: the nine blocks of Table 1",
        md.table(
            ["block", "map", "reduced: channels", "params", "MACs", "naive: channels", "params", "MACs"], rows
        ),
        f"All nine blocks: {sr:,} parameters and {mr / 1e9:.2f} G MACs with reductions, {sn:,} and {mn / 1e9:.2f} G "
        f'without ({sn / sr:.0f}x and {mn / mr:.0f}x): why the paper uses 1x1 convolutions "mainly as dimension '
        'reduction modules to remove computational bottlenecks" (Szegedy et al. 2014, sec. 2).',
        md.figure("stack.png"),
    )


def _sizes_section(results: dict) -> list[str]:
    s = results["sizes"]
    paper = s["googlenet_paper_layers"]
    ratio = s["alexnet2012"] / s["googlenet"]
    held = ratio >= PAPER_RATIO - 0.5
    rows = [
        ["`alexnet2012` (the paper's AlexNet)", s["alexnet2012"]],
        ["`googlenet` without auxiliary heads (cnnzoo, torchvision's layout)", s["googlenet"]],
        ["`googlenet` with both auxiliary heads (training only)", s["googlenet_with_aux"]],
        ["GoogLeNet as published (5x5 branches, biases, no BatchNorm)", paper["params"]],
        ["... without its 1024 -> 1000 classifier", paper["without_classifier"]],
    ]
    rows = [[name, f"{n:,}", f"{s['alexnet2012'] / n:.1f}"] for name, n in rows]
    rows.append(
        [
            "the papers' round figures (5 M vs 60 M)",
            f"{PAPER_GOOGLENET_PARAMS:,}",
            f"{PAPER_ALEXNET_PARAMS / PAPER_GOOGLENET_PARAMS:.0f}",
        ]
    )
    return md.section(
        "GoogLeNet against AlexNet",
        md.table(["network", "parameters", "AlexNet (2012) / it"], rows),
        f'**{"Held" if held else "Did not hold"} here** ("{PAPER_RATIO} times fewer parameters", Szegedy et al. '
        f"2014, sec. 1): counted, GoogLeNet has {ratio:.1f}x fewer parameters than AlexNet, not {PAPER_RATIO}x. "
        f"The {PAPER_RATIO}x is the papers' round 5 M against 60 M; the published layers count "
        f"{paper['params'] / 1e6:.1f} M ({paper['without_classifier'] / 1e6:.1f} M without the classifier). Still "
        "about an order of magnitude fewer, with more computation per parameter (see `reports/architectures`).",
    )


def finding(results: dict) -> tuple[str, str]:
    s, v = results["sizes"], results["variants"]
    ratio = s["alexnet2012"] / s["googlenet"]
    red, naive = v["reduced"]["total"], v["naive"]["total"]
    return ("Held" if ratio >= PAPER_RATIO - 0.5 else "Did not hold (12x)"), (
        f"GoogLeNet has {ratio:.1f}x fewer parameters than AlexNet, not the quoted {PAPER_RATIO}x; inception3a without "
        f"1x1 reductions has {naive['params'] / red['params']:.1f}x the parameters and {naive['macs'] / red['macs']:.1f}x "
        f"the MACs; branch receptive fields measured by the input gradient: "
        + ", ".join(f"{b} {_rf(r, 'rf_measured')}" for b, r in v["reduced"]["branches"].items())
        + (
            " (= computed)"
            if all(r.get("rf") == r.get("rf_measured") for r in v["reduced"]["branches"].values())
            else " (NOT as computed)"
        )
    )


run_inception_study = study_runner(NAME, PRESETS, _measure, write_report, default_out="reports/inception")

register_study(
    Study(
        name=NAME,
        summary="one Inception module's branches: parameters, MACs, channels, receptive fields; 1x1 reductions",
        run=run_inception_study,
        report=rewrite_report,
        default_out="reports/inception",
        finding=finding,
        presets=tuple(PRESETS),
    )
)
