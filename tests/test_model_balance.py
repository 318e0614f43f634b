"""Auxiliary-loss-free balancing: the sign rule on e_score_correction_bias, counts per optimizer step."""

import torch

from rlpipe.model import ModelConfig, Transformer


def _skewed_model(seed: int = 0) -> Transformer:
    """Every MoE layer starts out sending (nearly) all tokens to experts 0 and 1.

    The skew is put into the selection bias (+0.4 on experts 0/1 against sigmoid scores that vary
    by ~0.1 between experts), the state a router drifts into when a few experts win early.
    """
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=256, num_hidden_layers=2, num_nextn_predict_layers=1))
    with torch.no_grad():
        for moe in model.moe_layers:
            moe.gate.weight.normal_(0.0, 0.05)
            moe.gate.e_score_correction_bias[:2] = 0.4
    return model


def _imbalance(loads: torch.Tensor) -> float:
    return (loads.max(-1).values / loads.mean(-1)).max().item()


def test_bias_update_moves_skewed_router_toward_balance():
    model = _skewed_model()
    model.train()
    g = torch.Generator().manual_seed(1)
    history = []
    for _ in range(50):
        ids = torch.randint(0, 256, (8, 64), generator=g)
        with torch.no_grad():
            model(ids, labels=ids)  # labels: the MTP block's MoE routes too
        history.append(_imbalance(model.update_expert_bias(gamma=0.01)))
    assert history[0] > 3.0  # top-2 of 8 all on experts 0/1 would give max/mean = 4
    late = sum(history[-10:]) / 10
    assert late < 1.5, history  # from 4x the mean load to near balance
    assert all(h < history[0] for h in history[-10:])
    for moe in model.moe_layers:
        bias = moe.gate.e_score_correction_bias
        assert abs(bias.mean().item() - 0.1) < 1e-6  # centred updates keep the initial mean (0.8 / 8)
        assert bias[:2].max() < 0.4 - 0.2  # the favoured experts were pushed down


def test_bias_has_no_gradient_and_is_not_a_parameter():
    model = _skewed_model()
    names = {n for n, _ in model.named_parameters()}
    assert not any("e_score_correction_bias" in n for n in names)
    ids = torch.randint(0, 256, (2, 16))
    model(ids, labels=ids).loss.backward()
    for moe in model.moe_layers:
        assert moe.gate.e_score_correction_bias.grad is None
        assert moe.gate.weight.grad is not None and moe.gate.weight.grad.abs().sum() > 0


def test_counts_accumulate_over_micro_batches_and_reset():
    model = _skewed_model()
    ids = torch.randint(0, 256, (2, 16))
    model.eval()
    with torch.no_grad():
        model(ids, labels=ids)
    assert model.update_expert_bias().sum() == 0  # eval forwards (scoring, sampling) do not count
    model.train()
    with torch.no_grad():
        model(ids, labels=ids)
        model(ids, labels=ids)  # gradient accumulation: two micro-batches, one optimizer step
    loads = model.update_expert_bias()
    k = model.config.num_experts_per_tok
    assert loads.shape == (model.config.n_moe_layers, model.config.n_routed_experts)
    assert torch.equal(loads.sum(-1), torch.full((loads.shape[0],), 2.0 * 2 * 16 * k))
    assert model.update_expert_bias().sum() == 0  # counters were reset


def test_balance_loss_is_one_when_uniform_and_larger_when_skewed():
    from rlpipe.model.moe import MoE

    moe = MoE(ModelConfig.preset("tiny"))
    B, T, E, k = 2, 64, 8, 2
    uniform_scores = torch.full((B, T, E), 0.5)
    spread = torch.arange(T * k).view(1, T, k).expand(B, T, k) % E
    assert abs(moe.balance_loss(uniform_scores, spread).item() - 1.0) < 1e-6
    skewed_scores = torch.full((B, T, E), 0.1)
    skewed_scores[..., :2] = 0.9
    skewed = torch.tensor([0, 1]).expand(B, T, k)
    assert moe.balance_loss(skewed_scores, skewed).item() > 3.0


_RANK_SCRIPT = """
import json, sys, torch, torch.distributed as dist
from rlpipe.model import ModelConfig, Transformer
rank, init = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
torch.manual_seed(0)  # same weights on both ranks
model = Transformer(ModelConfig.preset("tiny", vocab_size=256, num_hidden_layers=2)).train()
ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(10 + rank))  # different data
with torch.no_grad():
    model(ids, labels=ids)
local = torch.stack([m.tokens_per_expert.clone() for m in model.moe_layers])
loads = model.update_expert_bias(0.01)
bias = torch.stack([m.gate.e_score_correction_bias for m in model.moe_layers])
print(json.dumps({"local": local.tolist(), "loads": loads.tolist(), "bias": bias.tolist()}))
dist.destroy_process_group()
"""


def test_loads_are_summed_over_ranks_so_every_rank_applies_the_same_update(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    init = f"file://{tmp_path / 'pg'}"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(r), init], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for r in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    a, b = results
    total = torch.tensor(a["local"]) + torch.tensor(b["local"])
    assert torch.equal(torch.tensor(a["loads"]), total) and torch.equal(torch.tensor(b["loads"]), total)
    assert a["local"] != b["local"]  # the ranks saw different tokens...
    assert a["bias"] == b["bias"]  # ...yet their biases stay identical
