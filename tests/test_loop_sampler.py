"""`LoopSampler`: one chain of `fit` stepped from the caller's loop gives fit's draws of that chain bit for bit
(CPU), reads the weights the step sees, takes the caller's own batches, saves and resumes exactly, refuses bad
input with a clear error, and the README's loops run."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pyro_dps import ConfigError, DataError, LoopSampler, Posterior, Problem, SamplerConfig, fit
from pyro_dps.models import bads

README = Path(__file__).resolve().parents[1] / "README.md"
CFG = dict(kernel="psgld", step_size=1e-3, local_step_size=0.1, warmup=20, samples=6, thin=3, batch_size=32,
           progress=False, seed=5, snapshots=3, check_every=7)
HYPER = {"beta": 0.6}


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    return Problem(nn.Linear(4, 2), x, y, x[:20], y[:20])


def _same_chain(post, chain, result, snapshots):
    """`result` (one chain) holds exactly `post`'s chain `chain`: weights, every per-draw scalar, final theta
    and theta snapshots."""
    np.testing.assert_array_equal(post.draws.weights().values[chain], result.draws.weights().values[0])
    a, b = post.dataset(), result.dataset()
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values[chain], b[name].values[0], err_msg=name)
    assert torch.equal(post.final_theta[chain], result.final_theta[0])
    mine = post.snapshots[chain * snapshots:(chain + 1) * snapshots]
    assert len(result.snapshots) == snapshots and all(map(torch.equal, mine, result.snapshots))


@pytest.mark.parametrize("update", ["auto", "langevin"])
def test_a_loop_of_steps_is_fits_one_chain_bit_for_bit(update):
    """The default exact weight update and the Langevin one: chain 0 stepped by `step()` is a one-chain fit."""
    config = SamplerConfig(**CFG, chains=1, weight_update=update)
    post = fit(bads.model, _problem(), HYPER, config)
    sampler = LoopSampler(bads.model, _problem(), HYPER, config)
    infos = [sampler.step() for _ in range(sampler.total_steps)]
    assert sampler.steps_done == sampler.total_steps == 38
    assert [i["step"] for i in infos if i["recorded"]] == [23, 26, 29, 32, 35, 38]
    result = sampler.result()
    _same_chain(post, 0, result, 3)
    assert result.config.chains == 1 and result.config.samples == 6
    assert result.weight_update == post.weight_update == ("exact" if update == "auto" else "langevin")
    last = infos[-1]
    assert last["step_size"] == 1e-3 and set(last) == {"step", "step_size", "recorded", "train_loss", "meta_loss",
                                                         "w_mean"}
    assert float(last["w_mean"]) == pytest.approx(float(result.dataset()["w_mean"].values[0, -1]))


def test_a_weight_network_model_too():
    """No table: the weights are the weight network's at the current theta, as the recorder reads them."""
    from pyro_dps import load_model

    config = SamplerConfig(**CFG, chains=1)
    model = load_model("weight_net")
    post = fit(model, _problem(), {}, config)
    sampler = LoopSampler(model, _problem(), {}, config)
    for _ in range(sampler.total_steps):
        sampler.step()
    _same_chain(post, 0, sampler.result(), 3)
    np.testing.assert_array_equal(sampler.weights().numpy(), post.draws.weights().values[0, -1])


def test_chain_1_with_its_own_batches_passed_back_is_fits_second_chain():
    """next_batch() handed back to step(): the second chain of a two-chain fit, bit for bit."""
    config = SamplerConfig(**CFG, chains=2)
    post = fit(bads.model, _problem(), HYPER, config)
    sampler = LoopSampler(bads.model, _problem(), HYPER, config, chain=1)
    for _ in range(sampler.total_steps):
        sampler.step(sampler.next_batch())
    _same_chain(post, 1, sampler.result(), 3)
    posterior = Posterior.from_result(sampler.result())
    assert posterior.select(0.5, 0.9).shape == (200,) and posterior.weight_summary()["mean"].shape == (200,)


def test_weights_are_the_rows_the_step_sees_and_the_draw_records():
    config = SamplerConfig(**CFG, chains=1, weight_update="langevin")
    sampler = LoopSampler(bads.model, _problem(), HYPER, config)
    for _ in range(sampler.total_steps):
        train_idx, meta_idx = sampler.next_batch()
        w = sampler.weights(train_idx)
        # (a sigmoid of the batch's rows, as the step takes it; the whole table's may differ in the last bit)
        torch.testing.assert_close(w, sampler.weights()[train_idx], rtol=1e-6, atol=0)
        info = sampler.step((train_idx, meta_idx))
        # the Langevin step evaluates the potential at the weights it was given: the ones read before it
        assert torch.equal(sampler.live.state.stats["w"], w)
        if info["recorded"]:
            recorded = sampler.result().draws.weights().values[0, -1]
            np.testing.assert_array_equal(sampler.weights().numpy(), recorded)
    assert sampler.weights().dtype == torch.float32 and sampler.weights(torch.tensor([3])).shape == (1,)


def test_the_callers_own_batches_drive_the_chain():
    """Batches from the caller's own loader, over rows 0..99 only, in batches of varying size, some given as
    training rows alone: the draws are kept, and rows 100..199 never move from their starting weights."""
    config = SamplerConfig(**CFG, chains=1)
    sampler = LoopSampler(bads.model, _problem(), HYPER, config)
    start = sampler.weights()
    order = torch.Generator().manual_seed(1)
    t = 0
    while sampler.steps_done < sampler.total_steps:
        rows = torch.randperm(100, generator=order)[:16 + t % 17]
        batch = rows if t % 2 else (rows.numpy(), torch.arange(t % 15, t % 15 + 5))  # numpy and int64 both taken
        sampler.step(batch)
        t += 1
    w = sampler.result().draws.weights().values[0]
    assert w.shape == (6, 200) and np.isfinite(w).all()
    np.testing.assert_array_equal(w[:, 100:], np.broadcast_to(start[100:].numpy(), (6, 100)))
    assert np.abs(w[:, :100] - start[:100].numpy()).max() > 0.05


def test_save_and_load_continue_the_chain_bit_for_bit(tmp_path):
    config = SamplerConfig(**CFG, chains=2)
    full = LoopSampler(bads.model, _problem(), HYPER, config, chain=1)
    for _ in range(full.total_steps):
        full.step()
    first = LoopSampler(bads.model, _problem(), HYPER, config, chain=1)
    at_start = first.state_dict()
    for _ in range(25):  # past warm-up, two draws kept
        first.step()
    first.save(tmp_path / "chain.safetensors")
    in_memory = first.state_dict()
    for payload in ("file", in_memory, at_start):
        resumed = LoopSampler(bads.model, _problem(), HYPER, config, chain=1)
        if payload == "file":
            resumed.load(tmp_path / "chain.safetensors")
        else:
            resumed.load_state_dict(payload)
        assert resumed.steps_done == (0 if payload is at_start else 25)
        while resumed.steps_done < resumed.total_steps:
            resumed.step()
        np.testing.assert_array_equal(resumed.result().draws.weights().values, full.result().draws.weights().values)
        assert torch.equal(resumed.result().final_theta[0], full.result().final_theta[0])
    finished = LoopSampler(bads.model, _problem(), HYPER, config, chain=1)
    finished.load_state_dict(full.state_dict())  # a finished chain loads; it takes no further step
    with pytest.raises(ConfigError, match="made all its 38 steps"):
        finished.step()
    edited = {**in_memory, "train_batches": {"perm": torch.tensor([0, 999]), "pos": 0}}
    with pytest.raises(ConfigError, match="train_batches is not a batch order over 200 rows"):
        first.load_state_dict(edited)  # refused: the running chain goes on as if nothing happened
    while first.steps_done < first.total_steps:
        first.step()
    np.testing.assert_array_equal(first.result().draws.weights().values, full.result().draws.weights().values)
    other = LoopSampler(bads.model, _problem(), HYPER, config, chain=0)
    with pytest.raises(ConfigError, match="different run: loop_chain was 1 there, is 0 now"):
        other.load_state_dict(in_memory)
    with pytest.raises(ConfigError, match="different run: hyper.beta"):
        LoopSampler(bads.model, _problem(), {"beta": 0.5}, config, chain=1).load(tmp_path / "chain.safetensors")


def test_bad_input_is_refused_with_a_clear_error():
    config = SamplerConfig(**{**CFG, "warmup": 2, "samples": 1, "thin": 1}, chains=2)
    for chain, text in ((2, r"chain must be an integer in \[0, 2\)"), (True, "got True"), (-1, "got -1")):
        with pytest.raises(ConfigError, match=text):
            LoopSampler(bads.model, _problem(), HYPER, config, chain=chain)
    with pytest.raises(ConfigError, match="memory_budget_mb"):
        LoopSampler(bads.model, _problem(), HYPER, SamplerConfig(**{**CFG, "memory_budget_mb": 1e-6}, chains=1))
    with pytest.raises(ConfigError, match="batch_size"):
        LoopSampler(bads.model, _problem(), HYPER, SamplerConfig(**{**CFG, "batch_size": 500}))
    sampler = LoopSampler(bads.model, _problem(), HYPER, config)
    meta = torch.arange(5)
    for batch, text in (((torch.tensor([0.0, 1.0]), meta), r"train_idx must be a 1-D integer tensor .* torch.float32"),
                        ((torch.tensor([True, False]), meta), "torch.bool"),
                        ((torch.zeros(2, 2, dtype=torch.long), meta), r"shape \(2, 2\)"),
                        ((torch.tensor([0, 200]), meta), r"row indices in \[0, 200\), got values in \[0, 200\]"),
                        ((torch.tensor([-1, 3]), meta), r"got values in \[-1, 3\]"),
                        ((torch.tensor([4, 4]), meta), "repeats a row"),
                        ((torch.tensor([], dtype=torch.long), meta), "at least one training row"),
                        ((torch.tensor([1, 2]), torch.tensor([20])), r"meta_idx must hold row indices in \[0, 20\)"),
                        ((torch.tensor([1, 2]), torch.tensor([], dtype=torch.long)), "one meta row"),
                        ("rows", "train_idx must be a 1-D integer tensor")):
        with pytest.raises(DataError, match=text):
            sampler.step(batch)
    with pytest.raises(DataError, match="train_idx"):
        sampler.weights(torch.tensor([0.5]))
    assert sampler.steps_done == 0  # nothing refused moved the chain
    for _ in range(3):
        sampler.step()
    with pytest.raises(ConfigError, match=r"made all its 3 steps \(warmup \+ samples \* thin\); read result\(\)"):
        sampler.step()
    assert sampler.result().draws.weights().shape == (1, 1, 200)
    with pytest.raises(ConfigError, match="a dict from state_dict"):
        sampler.load_state_dict("chain.safetensors")


def _readme_blocks() -> list[str]:
    """The Python blocks of README's "Your own training loop" subsection, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Your own training loop", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_loops_run(capsys):
    """The plain PyTorch loop as written; then the Lightning-shaped module driven as a Trainer drives one
    (training_step per batch of its loader, the optimiser from configure_optimizers) to the chain's end."""
    plain, lightning = _readme_blocks()
    scope: dict = {}
    exec(compile(plain, "README.md (plain loop)", "exec"), scope)
    assert scope["sampler"].steps_done == 500 and scope["posterior"].draws.weights().shape[:2] == (1, 20)
    assert scope["keep"].shape == (scope["problem"].n_train,) and len(capsys.readouterr().out.splitlines()) == 5
    exec(compile(lightning, "README.md (Lightning module)", "exec"), scope)
    module, sampler, loader = scope["module"], scope["sampler"], scope["loader"]
    optimizer = module.configure_optimizers()
    while sampler.steps_done < sampler.total_steps:
        for batch_idx, batch in enumerate(loader):
            loss = module.training_step(batch, batch_idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if sampler.steps_done == sampler.total_steps:
                break
    w = sampler.result().draws.weights().values
    assert w.shape[:2] == (1, 20) and np.isfinite(w).all()
