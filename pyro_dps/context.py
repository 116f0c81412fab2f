"""What a BADS model sees: the problem (network, data, loss) and, per step, a `ModelContext`."""
from __future__ import annotations

import contextlib
import copy
import itertools
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.data import Dataset, IterableDataset

from .data.rows import DatasetRows, read_iterable, take
from .errors import DataError
from .losses import cross_entropy

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Problem:
    """A network, its per-example loss and the train and meta tensors it is fitted on.

    The data are held once, as given: `batch` gathers a step's train and meta rows into the one input of a
    forward pass. `x_train` and `x_meta` may also be read on demand: a `pyro_dps.data.DatasetRows` (or a
    map-style torch Dataset, wrapped in one), whose rows are read a batch at a time (labels stay tensors).
    `x_meta` may be a torch `IterableDataset` of (x, y) items, with `y_meta` None: it is read once into tensors
    (`pyro_dps.data.read_iterable`; a meta set is small).
    """

    net: nn.Module
    x_train: torch.Tensor | DatasetRows
    y_train: torch.Tensor
    x_meta: torch.Tensor | DatasetRows | None = None
    y_meta: torch.Tensor | None = None
    loss: LossFn = cross_entropy
    total_train: int | None = None  # N_t of the whole training set when this problem holds one shard of it

    def __post_init__(self) -> None:
        if isinstance(self.x_meta, IterableDataset):
            if self.y_meta is not None:
                raise DataError("x_meta is an IterableDataset of (x, y) items, so y_meta must be None (its labels "
                                "are the items' y)")
            self.x_meta, self.y_meta = read_iterable(self.x_meta)
        for name in ("x_train", "x_meta"):
            if isinstance(getattr(self, name), Dataset):
                setattr(self, name, DatasetRows(getattr(self, name)))
        if self.x_meta is None:
            self.x_meta = self.x_train.empty() if isinstance(self.x_train, DatasetRows) else self.x_train[:0]
            self.y_meta = self.y_train[:0]
        self._validate()
        self.param_shapes = {name: p.shape for name, p in self.net.named_parameters()}
        self.buffers = dict(self.net.named_buffers())

    def _validate(self) -> None:
        """Shapes, dtypes and values that would otherwise fail deep inside a step."""
        for name in ("x_train", "y_train", "x_meta", "y_meta"):
            value = getattr(self, name)
            if not torch.is_tensor(value) and not (name.startswith("x") and isinstance(value, DatasetRows)):
                kinds = "a torch.Tensor, a pyro_dps.data.DatasetRows or a map-style Dataset" if name.startswith("x") \
                    else "a torch.Tensor"
                raise DataError(f"{name} must be {kinds}, got {type(value).__name__}")
        for split in ("train", "meta"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0]:
                raise DataError(f"x_{split} has {x.shape[0]} rows but y_{split} has {y.shape[0]}")
            # rows read on demand are not all read here: a row with non-finite values fails the steps that batch it
            if torch.is_tensor(x) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
                bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).nonzero()[0, 0])
                raise DataError(f"x_{split} has non-finite values (first at row {bad})")
        if self.x_train.shape[0] == 0:
            raise DataError("x_train is empty: there is nothing to weight")
        if self.x_meta.shape[1:] != self.x_train.shape[1:]:
            raise DataError(f"x_meta rows have shape {tuple(self.x_meta.shape[1:])}, "
                            f"x_train rows {tuple(self.x_train.shape[1:])}")
        if self.loss is cross_entropy:
            for split in ("train", "meta"):
                y = getattr(self, f"y_{split}")
                if y.is_floating_point() or y.dtype == torch.bool:
                    raise DataError(f"y_{split} must hold integer class labels, got dtype {y.dtype}")
                if y.dim() != 1:
                    raise DataError(f"y_{split} must be one label per row, got shape {tuple(y.shape)}")
            try:
                n_out = self.n_outputs  # the one probe forward pass, cached for the models that read it
            except RuntimeError:  # a model that does not use the network (e.g. a regression on its own tensors)
                return
            labels = torch.cat([self.y_train, self.y_meta])
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_out):
                raise DataError(f"labels must be in [0, {n_out}) for a network with {n_out} outputs, "
                                f"got values in [{int(labels.min())}, {int(labels.max())}]")

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def n_train_total(self) -> int:
        """N_t of the whole training set (the model's plate size); differs from `n_train` only in a shard."""
        return self.n_train if self.total_train is None else self.total_train

    @property
    def n_meta(self) -> int:
        return self.x_meta.shape[0]

    @property
    def n_outputs(self) -> int:
        """Width of the network's output (the number of classes for a classifier); from one probe row."""
        if not hasattr(self, "_n_outputs"):
            with torch.no_grad():
                self._n_outputs = int(self.net(_first_row(self.x_train)).shape[-1])
        return self._n_outputs

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    @property
    def streams(self) -> bool:
        """Whether some features are read on demand (a `DatasetRows`), not held as tensors."""
        return isinstance(self.x_train, DatasetRows) or isinstance(self.x_meta, DatasetRows)

    def repeatable_reads(self) -> contextlib.ExitStack:
        """A context in which rows read on demand read the same values when gathered again (`DatasetRows.repeatable`;
        nothing changes for tensors): two evaluations of one batch that are compared see the same data."""
        stack = contextlib.ExitStack()
        for x in {id(x): x for x in (self.x_train, self.x_meta) if isinstance(x, DatasetRows)}.values():
            stack.enter_context(x.repeatable())
        return stack

    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The network's output with the given parameters (the module's own are not used)."""
        return functional_call(self.net, (params, self.buffers), (x,))

    def forward_features(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs and penultimate features (the input of the network's last linear layer) from one pass.

        A network may name the module whose input is the embedding as `net.features_module`; else
        the last `nn.Linear` in `net.modules()` is used.
        """
        head = getattr(self.net, "features_module", None) or _last_linear(self.net)
        captured = []
        handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            out = self.forward(params, x)
        finally:
            handle.remove()
        return out, captured[-1].flatten(1)

    def batch(self, train_idx: torch.Tensor, meta_idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of a batch: training rows `train_idx`, then meta rows `meta_idx` (none when None).

        Two gathers and a concatenation of the batch's rows only (static shapes: `torch.compile` traces it); a
        `DatasetRows` reads just those rows.
        """
        if meta_idx is None:
            return take(self.x_train, train_idx), self.y_train[train_idx]
        return (torch.cat([take(self.x_train, train_idx), take(self.x_meta, meta_idx)]),
                torch.cat([self.y_train[train_idx], self.y_meta[meta_idx]]))

    def losses(self, params: dict[str, torch.Tensor], train_idx: torch.Tensor,
               meta_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example losses of training rows `train_idx`, then of meta rows `meta_idx` (none when None)."""
        x, y = self.batch(train_idx, meta_idx)
        return self.loss(self.forward(params, x), y)

    def to(self, device: torch.device | str) -> "Problem":
        """The same problem with network and data on `device`. A network elsewhere is copied there (the
        caller's module stays where it is); one already there is used as it is."""
        return Problem(_network_on(self.net, device), self.x_train.to(device), self.y_train.to(device),
                       self.x_meta.to(device), self.y_meta.to(device), self.loss, self.total_train)

    def shard(self, lo: int, hi: int) -> "Problem":
        """Training rows [lo, hi) with the full meta set; the model still sees the whole N_t."""
        x = self.x_train.rows(lo, hi) if isinstance(self.x_train, DatasetRows) else self.x_train[lo:hi]
        return Problem(self.net, x, self.y_train[lo:hi], self.x_meta, self.y_meta, self.loss,
                       self.n_train_total)


def _first_row(x: torch.Tensor | DatasetRows) -> torch.Tensor:
    """Row 0 as a batch of one (a probe input): a view of a tensor, one read of a row source."""
    return x.gather(torch.arange(1)) if isinstance(x, DatasetRows) else x[:1]


def _network_on(net: nn.Module, device: torch.device | str) -> nn.Module:
    """`net` when its parameters and buffers are all on `device`, else a copy of it there: each tensor moved
    straight to `device` (no second copy where it is now), the module's structure deep-copied around them."""
    target = torch.empty(0, device=device).device  # "cuda" -> the current cuda:N, as `Module.to` resolves it
    tensors = list(itertools.chain(net.parameters(), net.buffers()))
    if all(t.device == target for t in tensors):
        return net
    moved = {}
    for t in tensors:
        value = t.detach().to(target)
        moved[id(t)] = nn.Parameter(value, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else value
    return copy.deepcopy(net, moved)


def _last_linear(net: nn.Module) -> nn.Module:
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise DataError(f"network {type(net).__name__} has no nn.Linear head; set `net.features_module` to the "
                        "module whose input is the embedding")
    return linear[-1]


class ModelContext:
    """One step's view for the Pyro model: sizes, minibatch indices, and the per-example loss.

    `w_sum_rest` is the sum of the weights outside the batch, kept incrementally by the kernel, so the
    sparsity prior on `sum_i w_i` costs O(batch) per step.
    """

    __slots__ = ("problem", "train_idx", "meta_idx", "w_sum_rest", "memory", "used_label_sums", "_losses",
                 "_features")

    def __init__(self, problem: Problem, train_idx: torch.Tensor, meta_idx: torch.Tensor,
                 w_sum_rest: torch.Tensor | float = 0.0, memory: dict | None = None):
        self.problem = problem
        self.train_idx = train_idx
        self.meta_idx = meta_idx
        self.w_sum_rest = w_sum_rest
        self.memory = memory  # kept across a chain's steps (running averages); None in probe evaluations
        self.used_label_sums = False  # set when the model asks for per-class sums (the kernel then keeps them)
        self._losses = None
        self._features = None

    @property
    def n_train(self) -> int:
        """N_t: the plate size (the whole training set, also when this process holds one shard)."""
        return self.problem.n_train_total

    @property
    def n_meta(self) -> int:
        return self.problem.n_meta

    @property
    def param_shapes(self) -> dict[str, torch.Size]:
        return self.problem.param_shapes

    def _both_losses(self, theta: dict[str, torch.Tensor], features: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        # One forward pass over train and meta rows together (and the features, when asked); cached for the step.
        if self._losses is None or self._losses[0] is not theta or (features and self._features is None):
            p = self.problem
            if features:
                x, y = p.batch(self.train_idx, self.meta_idx)
                out, feats = p.forward_features(theta, x)
                both = p.loss(out, y)
                self._features = feats[:self.train_idx.numel()]
            else:
                both = p.losses(theta, self.train_idx, self.meta_idx)
            self._losses = (theta, both.split([self.train_idx.numel(), self.meta_idx.numel()]))
        return self._losses[1]

    def train_features(self, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        """Penultimate features h(z_i) of the batch's training examples (from the same forward pass as the losses)."""
        self._both_losses(theta, features=True)
        return self._features

    def train_labels(self) -> torch.Tensor:
        """The batch's training labels."""
        return self.problem.y_train[self.train_idx]

    def w_sum_by_label(self, w_batch: torch.Tensor) -> torch.Tensor:
        """Per-class sums of w over all of D_t (length `n_outputs`): the batch's weights added by label to the
        kernel's kept per-class sums of the rest; a model that calls this gets per-class sums kept for it."""
        self.used_label_sums = True
        k = self.problem.n_outputs
        rest = self.w_sum_rest if torch.is_tensor(self.w_sum_rest) and self.w_sum_rest.dim() == 1 \
            else torch.zeros(k, dtype=torch.float64, device=w_batch.device)
        return rest.index_add(0, self.train_labels(), w_batch.to(rest.dtype)).to(w_batch.dtype)

    def running_mean(self, name: str, value: torch.Tensor, window: int) -> torch.Tensor:
        """Mean of `value` and its detached values at the chain's last `window - 1` steps (paper eq. 9).

        Only the current value carries a gradient. Outside a chain (memory None) it is `value` itself.
        """
        if self.memory is None or window <= 1:
            return value
        past = self.memory.setdefault(name, [])
        out = (value + sum(past)) / (len(past) + 1) if past else value
        past.append(value.detach())
        del past[:-(window - 1)]
        return out

    def train_losses(self, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        """l(z_i; theta) for the batch's training examples."""
        return self._both_losses(theta)[0]

    def meta_losses(self, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        """l(z_j; theta) for the batch's meta examples."""
        return self._both_losses(theta)[1]

    def w_sum(self, w_batch: torch.Tensor) -> torch.Tensor:
        """sum_i w_i over all of D_t: the batch's weights plus the kept sum of the rest (in the weights' dtype,
        so the model's log density keeps the network's dtype, as Pyro's HMC/NUTS expect)."""
        return (self.w_sum_rest + w_batch.sum()).to(w_batch.dtype)
