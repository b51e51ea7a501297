"""What a frozen part of a network costs while the rest trains: BatchNorm kept as it was, outputs cached.

1. Frozen BatchNorm stays in inference mode while the rest of the network trains (the Keras lesson).
   `model.train()` turns every BatchNorm back to batch statistics; a BatchNorm whose parameters are all
   frozen belongs to a part that must not change, yet its running statistics would drift to the new data
   and undo what was learned. The engine calls `set_frozen_bn_eval` after each `model.train()`; in a
   network with nothing frozen it changes nothing.
2. The frozen prefix computed once (`split_frozen`, `PrefixCache`): when every layer before some point is
   frozen and deterministic (BatchNorm on running statistics, no dropout), its output for an image never
   changes, so fine-tuning `last:N` need not recompute it every epoch. The network is traced with torch.fx
   and cut where the first trainable layer reads: the prefix (images -> that tensor) runs once over the
   training and test images, keyed by sample index, and the suffix (that tensor -> logits, the model's
   own layers) trains on the stored tensors, batched in the loader's own order. An epoch then costs the
   trainable suffix only. The stored tensors live in memory, or in a file mapped from disk when large.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

__all__ = ["set_frozen_bn_eval", "FrozenSplit", "split_frozen", "PrefixCache", "CachedLoader"]

MEMORY_LIMIT = 2 << 30  # bytes: a larger cache goes to a file mapped from disk
_RANDOM_FUNCTIONS = {
    torch.nn.functional.dropout,
    torch.nn.functional.dropout1d,
    torch.nn.functional.dropout2d,
    torch.nn.functional.dropout3d,
    torch.nn.functional.alpha_dropout,
    torch.dropout,
    torch.bernoulli,
    torch.rand_like,
    torch.randn_like,
}


def set_frozen_bn_eval(model: nn.Module) -> list[str]:
    """Put every BatchNorm whose parameters are all frozen into eval mode; return their names.

    BatchNorm without parameters (affine=False) is left as it is: with nothing to tell whether it belongs
    to a frozen part, it follows `model.train()`/`eval()`.
    """
    names = []
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
                names.append(name)
    return names


@dataclass
class FrozenSplit:
    prefix: (
        torch.fx.GraphModule
    )  # images -> the frozen part's output, the one tensor the trainable part reads
    suffix: torch.fx.GraphModule  # that tensor -> logits: the model's own layer objects, so it trains them
    boundary: str  # the cut, in words (the last frozen operation)


def split_frozen(model: nn.Module) -> tuple[FrozenSplit | None, str]:
    """(split, "") where the frozen part can be cached exactly, else (None, why not).

    Traced in eval mode (as `models.feature_graph`), so Python branches on `self.training` record the
    inference path; a model with auxiliary outputs in training (Inception) is refused for that reason."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        return None, "nothing is trainable"
    if len(trainable) == len(list(model.parameters())):
        return None, "nothing is frozen"
    if len(getattr(model, "classifier_names", lambda: ())()) > 1:
        return None, "its auxiliary classifiers run in training only"
    modes = [(m, m.training) for m in model.modules()]  # frozen BatchNorm in eval: kept as it is
    model.eval()
    try:
        graph = torch.fx.Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure means: run it as it is
        return None, f"torch.fx cannot trace it ({type(e).__name__})"
    finally:
        for m, training in modes:
            m.training = training
    grows, reads = {}, {}  # node -> depends on a trainable parameter / on the input images
    for node in graph.nodes:
        inputs = node.all_input_nodes
        own = False
        if node.op == "get_attr":
            own = node.target in trainable
        elif node.op == "call_module":
            own = any(p.requires_grad for p in model.get_submodule(node.target).parameters())
        grows[node] = own or any(grows[a] for a in inputs)
        reads[node] = node.op == "placeholder" or any(reads[a] for a in inputs)
    frozen = [n for n in graph.nodes if reads[n] and not grows[n] and n.op != "output"]
    why = _not_deterministic(model, frozen)
    if why:
        return None, why
    cut, again = _cut(frozen, grows)
    if cut is None:
        return None, "its frozen part hands several tensors to the trainable one"
    prefix = _prefix(model, graph, grows, again, cut)
    return FrozenSplit(prefix, _suffix(model, graph, reads, grows, again, cut), cut.name), ""


def _cut(frozen: list, grows: dict):
    """(the one frozen tensor the trainable part depends on, the frozen operations the suffix recomputes
    from it), or (None, None). Where the trainable part reads several frozen tensors (a ResNet's option-A
    shortcut slices the stage's output), the earliest one from which all of them follow is cached, and
    the parameter-free operations between recomputed."""
    boundary = [n for n in frozen if any(grows[u] for u in n.users)]
    members = set(frozen)
    for cut in boundary:
        again: set = set()
        for node in frozen[frozen.index(cut) + 1 :]:
            if any(a is cut or a in again for a in node.all_input_nodes):
                again.add(node)
        inside = {cut, *again}
        if all(n in inside for n in boundary) and all(
            a in inside or a not in members for n in again for a in n.all_input_nodes
        ):
            return cut, again
    return None, None


def _not_deterministic(model: nn.Module, frozen: list) -> str:
    for node in frozen:
        if node.op == "call_module":
            m = model.get_submodule(node.target)
            if isinstance(m, _DropoutNd):
                return f"its frozen part has dropout ({node.target})"
            if isinstance(m, _BatchNorm) and not list(m.parameters(recurse=False)):
                return f"its frozen BatchNorm {node.target} has no parameters, so it follows train()"
        if node.op == "call_function" and node.target in _RANDOM_FUNCTIONS:
            return f"its frozen part draws random numbers ({node.name})"
    return ""


def _module(model: nn.Module, graph: torch.fx.Graph, name: str) -> torch.fx.GraphModule:
    gm = torch.fx.GraphModule(model, graph, class_name=name)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _prefix(model, graph, grows, again, cut) -> torch.fx.GraphModule:
    g, env = torch.fx.Graph(), {}
    for node in graph.nodes:
        if node.op != "output" and not grows[node] and node not in again:  # the frozen part, its constants
            env[node] = g.node_copy(node, lambda a: env[a])
    g.output(env[cut])
    return _module(model, g, f"{type(model).__name__}FrozenPrefix")


def _suffix(model, graph, reads, grows, again, cut) -> torch.fx.GraphModule:
    g = torch.fx.Graph()
    env = {cut: g.placeholder("frozen")}
    for node in graph.nodes:
        if node is cut or node.op == "placeholder" or (reads[node] and not grows[node] and node not in again):
            continue
        env[node] = g.node_copy(node, lambda a: env[a])
    return _module(model, g, f"{type(model).__name__}TrainableSuffix")


class PrefixCache:
    """The prefix's output for every sample of an in-memory loader, by sample index (row i = image i), so
    any epoch's order reads it: computed once, in eval mode and without gradients, in batches of
    `batch_size`, under autocast `amp` (the precision the uncached run would compute it in), stored as
    float32 in memory, or in a file mapped from disk above `memory_limit` bytes (`close` removes it)."""

    def __init__(
        self,
        prefix: nn.Module,
        loader,
        *,
        amp: torch.dtype | None = None,
        batch_size: int = 256,
        memory_limit: int = MEMORY_LIMIT,
    ):
        self.folder: Path | None = None
        device = loader.device
        n = len(loader.labels)
        prefix.eval()
        with torch.no_grad():
            first = self._run(prefix, loader, torch.arange(min(n, 1), device=device), amp)
            shape = tuple(first.shape[1:])
            self.nbytes = n * first[0].numel() * 4
            if self.nbytes > memory_limit:
                self.folder = Path(tempfile.mkdtemp(prefix="cnnzoo-prefix-cache-"))
                path = str(self.folder / "frozen.npy")
                mapped = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, *shape))
                self.outputs = torch.from_numpy(mapped)
            else:
                self.outputs = torch.empty((n, *shape), dtype=torch.float32, device=device)
            for start in range(0, n, batch_size):
                index = torch.arange(start, min(n, start + batch_size), device=device)
                out = self._run(prefix, loader, index, amp)
                self.outputs[start : start + len(index)] = out.to(self.outputs.device)
        self.labels = loader.labels
        self.shape = shape

    @staticmethod
    def _run(prefix, loader, index: Tensor, amp) -> Tensor:
        x = loader.finish_batch(loader.images.index_select(0, index))  # no augmentation: it is off here
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            return prefix(x).float()

    @property
    def on_disk(self) -> bool:
        return self.folder is not None

    def close(self) -> None:
        """Remove the file of a cache kept on disk (a cache in memory goes with its last reference)."""
        if self.folder is not None:
            self.outputs = None
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


class CachedLoader:
    """`(cached prefix outputs, labels)` batches in `loader`'s own order: the same permutation of the same
    (seed, epoch), the same batch size, so the suffix sees the batches the whole network would."""

    def __init__(self, cache: PrefixCache, loader):
        self.cache, self.loader = cache, loader
        self.device = loader.device

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        epoch = self.loader._next_epoch()
        order = self.loader.order(epoch)
        outputs, labels = self.cache.outputs, self.cache.labels
        for index in order.split(self.loader.batch_size):
            if self.loader.drop_last and len(index) < self.loader.batch_size:
                break
            rows = outputs.index_select(0, index.to(outputs.device)).to(self.device, non_blocking=True)
            yield rows, labels.index_select(0, index.to(labels.device))
