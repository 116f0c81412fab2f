"""BADS during Hugging Face `Trainer` fine-tuning of a causal LM with a meta set (the paper's instruction tuning).

    from transformers import TrainingArguments
    from pyro_dps.integrations.hf_trainer import BADSTrainer
    from pyro_dps.integrations.indexed import IndexedInstructions

    train = IndexedInstructions(encode(examples, tokenizer, max_length=256))   # items carry their row `index`
    meta = IndexedInstructions(encode(meta_examples, tokenizer, max_length=256))
    trainer = BADSTrainer(model=lm, args=TrainingArguments(...), train_dataset=train, meta_dataset=meta, beta=0.5)
    trainer.train()
    trainer.weight_summary()["mean"]                          # posterior mean weight per example
    trainer.write_weighted_jsonl("weighted.jsonl", examples)  # `weight`, `weight_sd`, `p_keep` per example

Each training step, on a batch B of training rows (their `index` field names them) and a meta batch:
1. l_i, the token-averaged NLL of each row's response (`losses.sequence_nll`; `labels` follow Hugging Face's
   convention, -100 off the response), and the meta rows' l_j, both under the current theta;
2. the batch rows' weights are drawn EXACTLY from their conditional given l_i, the other weights' sum and the
   Normal prior on the sum (`WeightTable`, which calls `kernels.conditional.ConditionalWeights`);
3. the Trainer's optimiser takes a step on rho_t mean_B(w_i l_i) + rho_m (N_m / N_t) mean_Bm(l_j): the
   negative log joint of theta divided by N_t (the full joint's sums, estimated without bias from the batches).

Theta is NOT sampled: it is a point estimate moved by the Trainer's optimiser, as the paper runs it (the
Gaussian prior on theta is left to `weight_decay`); the weights are posterior draws given the current theta.
Every `record_every` optimiser steps after `burn_in` (default: half the run) the table is kept as a draw.
The rows stay aligned with their examples under any shuffling because every item carries its `index`.
Each Trainer checkpoint holds the weight table's whole state (weights, running sum, generators, recorded draws)
in a file of its own, `bads_weight_table.safetensors` (no pickle), and `train(resume_from_checkpoint=...)` restores
it from the folder the Trainer resumes from, so a resumed run continues the same draws.
One process and one device only (no DDP / DataParallel): the table lives in this process.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import transformers
import xarray as xr
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..draws import weight_summary
from ..errors import ConfigError, DataError
from ..losses import sequence_nll
from ..safefile import load_tree, save_tree
from ..selection import prob_above
from ..text.selection_report import source_weight_table, weight_column, write_weighted_jsonl
from .weight_table import WeightTable, generator_state

INDEX = "index"
TABLE_FILE = "bads_weight_table.safetensors"  # in each checkpoint folder, beside the Trainer's files


def response_losses(model, inputs: dict) -> tuple[torch.Tensor, object]:
    """(per-example token-averaged response NLL (B,), the model's outputs) of a causal-LM batch with `labels`."""
    missing = [k for k in ("input_ids", "labels") if k not in inputs]
    if missing:
        raise DataError(f"the batch has no {missing} field(s) (fields: {sorted(inputs)}); BADSTrainer needs "
                        "input_ids and labels (-100 off the response), e.g. from IndexedInstructions")
    outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    return sequence_nll(logits[:, :-1].float(), inputs["labels"][:, 1:]), outputs


class _DrawRecorder(transformers.TrainerCallback):
    """Fixes the burn-in when training starts and keeps a draw after each due optimiser step."""

    def __init__(self, table: WeightTable):
        self.table = table

    def on_train_begin(self, args, state, control, **kwargs):
        self.table.start(state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self.table.record_if_due(state.global_step)


class BADSTrainer(transformers.Trainer):
    """A `transformers.Trainer` that runs BADS: exact conditional weight draws per batch, weighted loss for theta.

    Extra arguments (keywords): `meta_dataset` (items with input_ids and labels), `beta` (a number in (0, 1]:
    the expected useful fraction; "auto" is refused, its estimate would cost two more fine-tunings), `rho_t`,
    `rho_m` (None: `models/bads.py`'s default, the meta set weighs as much as the selected training part),
    `sigma` (None: `default_sigma`), `temperature` (of the weights' conditional; 0.01 like `SamplerConfig`),
    `record_every`, `burn_in`, `meta_batch_size` (None: the training batch size), `candidates`, `weight_seed`.
    """

    def __init__(self, *args, meta_dataset=None, beta=None, rho_t: float = 1.0, rho_m: float | None = None,
                 sigma: float | None = None, temperature: float = 0.01, record_every: int = 10,
                 burn_in: int | None = None, meta_batch_size: int | None = None, candidates: int = 8,
                 weight_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.train_dataset is None or not hasattr(self.train_dataset, "__len__"):
            raise ConfigError("BADSTrainer needs a map-style train_dataset with a length (one weight per example)")
        if meta_dataset is None or not hasattr(meta_dataset, "__len__"):
            raise DataError("BADSTrainer needs meta_dataset: the curated examples (a map-style dataset)")
        if self.args.world_size > 1 or self.args.n_gpu > 1:
            raise ConfigError("BADSTrainer runs in one process on one device (its weight table is not shared)")
        if beta is None:
            raise ConfigError("beta is required: the expected useful fraction of the training set, in (0, 1]")
        self.meta_dataset = meta_dataset
        self.weight_table = WeightTable(len(self.train_dataset), len(meta_dataset), beta, rho_t, rho_m, sigma,
                                   temperature, record_every, burn_in, candidates, weight_seed)
        size = self.args.per_device_train_batch_size if meta_batch_size is None else meta_batch_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"meta_batch_size must be an integer >= 1 or None, got {meta_batch_size!r}")
        self.meta_batch_size = min(size, len(meta_dataset))
        self._meta_generator = torch.Generator().manual_seed(weight_seed + 1)
        self.loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it by the accumulation steps
        self.model_accepts_loss_kwargs = False  # the model computes no loss here
        self.add_callback(_DrawRecorder(self.weight_table))

    def _set_signature_columns_if_needed(self):
        """Keep the `index` field through the Trainer's removal of columns the model's forward does not take."""
        super()._set_signature_columns_if_needed()
        if INDEX not in self._signature_columns:
            self._signature_columns.append(INDEX)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Training: draw the batch's weights, return the BADS objective; evaluation: the mean response NLL."""
        inputs = dict(inputs)
        index = inputs.pop(INDEX, None)
        losses, outputs = response_losses(model, inputs)
        if not model.training:
            loss = losses.mean()
        else:
            if index is None:
                raise DataError(f"the training batch has no {INDEX!r} field (fields: {sorted(inputs)}): each item "
                                "must carry its row number, e.g. IndexedInstructions, or a `datasets.Dataset` "
                                "with ds.add_column('index', list(range(len(ds))))")
            w = self.weight_table.update(index, losses.detach())
            meta_losses, _ = response_losses(model, self._meta_batch())
            loss = self.weight_table.objective(w, losses, meta_losses)
        return (loss, outputs) if return_outputs else loss

    def _meta_batch(self) -> dict:
        """`meta_batch_size` distinct meta rows at random (the trainer's own generator), collated, on the device."""
        rows = torch.randperm(len(self.meta_dataset), generator=self._meta_generator)[:self.meta_batch_size]
        batch = dict(self.data_collator([self.meta_dataset[int(i)] for i in rows]))
        batch.pop(INDEX, None)
        return self._prepare_inputs(batch)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial):
        """Write the weight table's state into the checkpoint folder, then let the Trainer save its own part.

        Here and not in a callback's `on_save`: this method knows the folder (a search trial's run folder
        included), and writing first means the Trainer's Hub push and checkpoint rotation, which end it,
        see a complete folder."""
        if self.args.should_save:
            folder = os.path.join(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            save_tree(os.path.join(folder, TABLE_FILE), {"table": self.weight_table.state(),
                                                         "meta_generator": self._meta_generator.get_state()})
        super()._save_checkpoint(model, trial)

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        """`Trainer.train`; resuming, the weight table is first restored from the checkpoint folder resumed from.

        Here and not in `_load_from_checkpoint`: the Trainer calls that from two places (before or after
        wrapping the model, by backend) to load weights; here a bad table file fails before anything loads."""
        if resume_from_checkpoint is True:  # the Trainer's rule; no checkpoint: left True for its own error
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir) or True
        if isinstance(resume_from_checkpoint, (str, os.PathLike)):
            self._load_table(resume_from_checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def _load_table(self, folder) -> None:
        """Restore the weight table and the meta batches' generator from `folder`'s table file."""
        path = os.path.join(folder, TABLE_FILE)
        if not os.path.isfile(path):
            raise DataError(f"checkpoint folder {str(folder)!r} has no {TABLE_FILE}: it was not written by "
                            "BADSTrainer (a plain Trainer's checkpoint?), so there is no weight table to resume; "
                            "resume from a BADSTrainer checkpoint or train from the start")
        saved = load_tree(path, "weight table file", DataError)
        if not isinstance(saved, dict) or "table" not in saved or "meta_generator" not in saved:
            raise DataError(f"{path!r} is not a weight table file: it lacks the 'table' or 'meta_generator' field")
        meta_state = generator_state(saved["meta_generator"], repr(path), "meta_generator")
        self.weight_table.load_state(saved["table"], repr(path))
        self._meta_generator.set_state(meta_state)

    # ------------------------------------------------------------------ reading the weights after training
    def weight_draws(self) -> np.ndarray:
        """The recorded weight draws, numpy (draws, N_t)."""
        return self.weight_table.draws_array()

    def weight_summary(self, quantiles: tuple[float, float] = (0.05, 0.95)) -> dict[str, np.ndarray]:
        """Per-example posterior mean, sd and quantiles of the draws (`pyro_dps.draws.weight_summary`)."""
        return weight_summary(self.weight_draws(), quantiles)

    def p_keep(self, tau: float = 0.5) -> np.ndarray:
        """P(w_i > tau) per example: the fraction of draws above tau."""
        return prob_above(self.weight_draws(), tau)

    def posterior_dataset(self, sources=None) -> xr.Dataset:
        """The draws as a Dataset with `weights` (chain, draw, example), one chain, for `pyro_dps.to_arviz`."""
        draws = self.weight_draws()
        sources = getattr(self.train_dataset, "sources", None) if sources is None else sources
        coords = {"chain": [0], "draw": np.arange(len(draws)), "example": np.arange(draws.shape[1])}
        if sources is not None:
            coords["source"] = ("example", np.asarray(sources, dtype=str))
        return xr.Dataset({"weights": (("chain", "draw", "example"), draws[None])}, coords=coords)

    def weight_column(self) -> dict[str, list[float]]:
        """{"weight": posterior means in example order}: `ds.add_column("weight", trainer.weight_column()["weight"])`."""
        return weight_column(self.weight_summary()["mean"], self.weight_table.n_train)

    def write_weighted_jsonl(self, path, examples, tau: float = 0.5):
        """The training examples (in dataset order) as JSONL with `weight`, `weight_sd` and `p_keep` (P(w > tau))."""
        summary = self.weight_summary()
        return write_weighted_jsonl(path, examples, summary["mean"], summary["sd"], self.p_keep(tau))

    def source_weight_table(self, sources=None, selected=None) -> list[dict]:
        """`text.source_weight_table` of the posterior mean weights (sources default to the dataset's)."""
        sources = getattr(self.train_dataset, "sources", None) if sources is None else sources
        if sources is None:
            raise DataError("no sources: pass one source name per training example")
        return source_weight_table(sources, self.weight_summary()["mean"], selected)
