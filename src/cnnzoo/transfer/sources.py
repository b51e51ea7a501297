"""Where transfer learning starts: pretrained weights from a cnnzoo run, a weights file or torchvision.

`load_source(spec, num_classes=..., in_chans=...)` returns the model ready to fine-tune:

1. read the source (`cnnzoo.artifacts.source`): a cnnzoo run folder, checkpoint or export folder (its
   JSON names the architecture), a `.pth`/`.pt`
   file (read with `torch.load(weights_only=True)`, so a pickle can never run code), a `.safetensors`
   file, or `torchvision:NAME` (the official weights, downloaded through torchvision)
2. clean the keys: unwrap {"state_dict": ...}, strip "module." (DDP) and "_orig_mod." (torch.compile),
   rename timm's VGG head (`TIMM_RENAMES`)
3. find the architecture: the checkpoint's config, `model_name`, or the one registered model whose
   state-dict layout (keys and shapes) the weights fit
4. build it, adapt the first convolution to `in_chans` (`adapt_conv_weight`), load everything strictly
5. replace the classifier (`reset_classifier`) when the class count differs, and report what happened

Preprocessing follows the source weights, not the target data: what the network learned to see is
images normalised the way its training normalised them. Which layer is the first convolution and which
are the classifiers, and what a bare weights file's preprocessing is, come from the model's own
`pretrained_cfg` and registry entry (`cnnzoo.models`), never from a guess by family.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..artifacts.source import SourceWeights, read_source
from ..models._builder import adapt_stats
from ..models._torchvision import TORCHVISION_MODELS
from ..models._weights import (
    TIMM_RENAMES,
    LoadReport,
    adapt_conv_weight,
    clean_state_dict,
    identify_architecture,
    load_adapted,
    map_timm_names,
)

__all__ = [
    "LoadReport",
    "LoadedSource",
    "TIMM_RENAMES",
    "TORCHVISION_MODELS",
    "adapt_conv_weight",
    "adapt_stats",
    "clean_state_dict",
    "identify_architecture",
    "load_source",
    "map_timm_names",
]


@dataclass
class LoadedSource:
    """The model to fine-tune (new head and channels), its name and kwargs, and the source's facts.

    `meta` holds the source's preprocessing (`image_size`, `mean`, `std`, adapted to the target's
    channels), `source_classes` (names, or None where the source has none), `source_num_classes`,
    `source_in_chans`, `source` (the spec) and `kind` ("cnnzoo", "weights" or "torchvision").
    """

    model: nn.Module
    model_name: str
    model_kwargs: dict
    meta: dict
    report: LoadReport

    def describe(self) -> list[str]:
        """A few human-readable lines: what was loaded from where, what was replaced or adapted."""
        m, r = self.meta, self.report
        n_src = m["source_num_classes"]
        lines = [f"source: {m['source']} ({m['kind']}, {self.model_name}, {n_src or 'no'} classes)"]
        lines.append(f"loaded {len(r.loaded)} tensors from the source")
        if r.replaced or r.new:
            lines.append(
                f"new classifier ({n_src or 'none'} -> {self.model.num_classes} classes): " + ", ".join(r.new)
            )
        lines += r.adapted
        how = "assumed for weights without a config" if m.get("assumed") else "from the source"
        lines.append(
            f"preprocessing ({how}): {m['image_size']} px, mean {_fmt(m['mean'])}, std {_fmt(m['std'])}"
        )
        return lines


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def load_source(
    spec: str, *, num_classes: int, in_chans: int, model_name: str | None = None, reset_head: bool = False
) -> LoadedSource:
    """Build the model a pretrained source describes, with `num_classes` outputs and `in_chans` inputs.

    `spec`: any source `cnnzoo.artifacts.source` reads: a cnnzoo run folder, checkpoint or export folder,
    a `.pth`/`.pt`/`.safetensors` weights file (its architecture is `model_name` or guessed from its keys
    and shapes), `torchvision:NAME`, or bundled weights (`lenet5:glyphs-latin`).
    The classifier is replaced when the class counts differ, or always with `reset_head` (a new label
    set of the same size); everything else loads strictly. Every problem raises `CnnzooError`.
    """
    src = read_source(str(spec), model_name)
    model, report, src_classes, src_chans = load_adapted(
        src.name, src.kwargs, src.state, num_classes=num_classes, in_chans=in_chans, reset_head=reset_head,
        label=src.label, hint_guess=src.kind == "weights",
    )  # fmt: skip
    return LoadedSource(
        model, src.name, dict(src.kwargs), _meta(src, in_chans, src_classes, src_chans), report
    )


def _meta(src: SourceWeights, in_chans: int, src_classes: int | None, src_chans: int) -> dict:
    prep = src.preprocessing
    return {
        "image_size": prep["image_size"],
        "mean": adapt_stats(prep["mean"], in_chans),
        "std": adapt_stats(prep["std"], in_chans),
        "assumed": prep["assumed"],
        "source_classes": src.classes,
        "source_num_classes": src_classes,
        "source_in_chans": src_chans,
        "source": src.label,
        "kind": src.kind,
    }
