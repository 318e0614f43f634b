"""Routing replay (R3): record the experts each token used, replay them later with live gate weights.

Routers get gate weights N(0, 0.1) instead of the 0.02 init, so expert scores are separated and a
tiny numeric difference (padding, packing) does not flip a choice (platform-notes: random routers
are near-tied). Selections actually used are observed where the experts run (a hook on `Experts`),
not taken from what `token_logprobs` reports.
"""

import pytest
import torch

from rlpipe.model import ModelConfig, Transformer, routing_mismatch

VOCAB = 128
GROUPED = dict(n_group=4, topk_group=2, num_experts_per_tok=3, routed_scaling_factor=2.5)


def _model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=VOCAB, num_hidden_layers=3, **overrides))
    with torch.no_grad():
        for moe in model.moe_layers:
            moe.gate.weight.normal_(0.0, 0.1)
            moe.gate.e_score_correction_bias.normal_(0.0, 0.05)
    return model


def _ids(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def _record(model, ids, **kw) -> torch.Tensor:
    """The old-policy pass: eval mode, no autograd."""
    model.eval()
    with torch.no_grad():
        return model.token_logprobs(ids, return_routing=True, **kw)[1]


class ExpertsSpy:
    """Collects the expert indices each main-stack `Experts` module is run with, per forward."""

    def __init__(self, model: Transformer) -> None:
        self.calls = []
        self.handles = [layer.mlp.experts.register_forward_hook(self._hook)
                        for layer in model.layers if layer.is_moe]

    def _hook(self, module, args, output):
        self.calls.append(args[2].detach().clone())  # (N, k), N = B * T

    def routing(self, B: int, T: int) -> torch.Tensor:
        """(n_routed_layers, B, T, k) of the last forward; then forget."""
        n = len(self.handles)
        used, self.calls = torch.stack([c.view(B, T, -1) for c in self.calls[-n:]]), []
        return used


@pytest.mark.parametrize("overrides", [{}, GROUPED], ids=["top2", "grouped-top3"])
def test_replay_reproduces_recorded_experts_after_an_optimizer_step(overrides):
    model = _model(**overrides)
    ids = _ids(2, 24)
    recorded = _record(model, ids)
    assert recorded.shape == (model.n_routed_layers, 2, 24, model.config.num_experts_per_tok)

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    (-model.token_logprobs(ids).mean()).backward()
    opt.step()
    opt.zero_grad()

    spy = ExpertsSpy(model)
    free_lp = model.token_logprobs(ids)  # training forward, autograd on, free routing
    free = spy.routing(2, 24)
    replay_lp, reported = model.token_logprobs(ids, routing=recorded, return_routing=True)
    replayed = spy.routing(2, 24)

    assert routing_mismatch(recorded, free).max() > 0.05  # the step moved some tokens' routing
    assert torch.equal(replayed, recorded)  # the experts that ran are the recorded ones, in order
    assert torch.equal(reported, recorded)
    assert not torch.allclose(free_lp, replay_lp)


def test_replay_gives_the_router_its_gradient_at_the_replayed_experts():
    model = _model()
    ids = _ids(2, 16)
    routing = _record(model, ids)
    routing[0] = torch.tensor([0, 1])  # first MoE layer: every token forced to experts 0 and 1
    model.train()
    (-model.token_logprobs(ids, routing=routing).mean()).backward()
    routers = [layer.mlp.gate for layer in model.layers if layer.is_moe]
    for router in routers:
        assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0
    # Gate weights are gathered from the live scores at the replayed experts only: no other row learns.
    grad = routers[0].weight.grad.abs().sum(-1)
    assert (grad[:2] > 0).all() and (grad[2:] == 0).all()


def test_replaying_the_routing_of_the_same_weights_changes_nothing():
    model = _model()
    ids = _ids(2, 20)
    routing = _record(model, ids)
    with torch.no_grad():
        free, recorded_again = model.token_logprobs(ids, return_routing=True)
        replayed = model.token_logprobs(ids, routing=routing)
    assert torch.equal(recorded_again, routing)
    assert torch.equal(free, replayed)

    model.train()
    grads = []
    for kw in ({}, {"routing": routing}):
        model.zero_grad()
        (-model.token_logprobs(ids, **kw).mean()).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1])
    assert all(torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(*grads))


def test_routing_mismatch_compares_expert_sets_per_layer():
    a = torch.tensor([[[[0, 1], [2, 3], [4, 5]]],  # layer 0, B=1, T=3, k=2
                      [[[0, 1], [2, 3], [4, 5]]]])  # layer 1
    b = torch.tensor([[[[1, 0], [3, 2], [4, 5]]],  # same sets, other order
                      [[[0, 1], [2, 7], [4, 5]]]])  # token 1 differs in one expert
    assert torch.equal(routing_mismatch(a, b), torch.tensor([0.0, 1 / 3]))
    assert torch.equal(routing_mismatch(a, a), torch.zeros(2))
    assert torch.equal(routing_mismatch(a, b, mask=torch.tensor([[1, 0, 1]])), torch.zeros(2))
    assert torch.equal(routing_mismatch(a, b, mask=torch.tensor([[False, True, True]])), torch.tensor([0.0, 0.5]))
    assert torch.equal(routing_mismatch(a, b, mask=torch.zeros(1, 3)), torch.zeros(2))  # nothing counted


def test_padded_rows_record_and_replay_like_unpadded_sequences():
    """Left padding (pads in their own segment): real positions route and replay as the sequence alone."""
    model = _model()
    seqs = [_ids(1, 9, seed=2)[0], _ids(1, 5, seed=3)[0]]
    T = 9
    ids = torch.full((2, T), 2)
    mask = torch.zeros(2, T, dtype=torch.long)
    for b, seq in enumerate(seqs):
        ids[b, T - len(seq):], mask[b, T - len(seq):] = seq, 1
    pad_kw = dict(position_ids=(mask.cumsum(-1) - 1).clamp(min=0), segment_ids=mask)
    routing = _record(model, ids, **pad_kw)
    alone = [_record(model, seq[None]) for seq in seqs]
    for b, seq in enumerate(seqs):
        assert torch.equal(routing[:, b, T - len(seq):], alone[b][:, 0])

    with torch.no_grad():  # the policy moves; replay keeps each sequence's recorded experts
        for layer in model.layers:
            if layer.is_moe:
                layer.mlp.gate.weight.add_(torch.randn_like(layer.mlp.gate.weight) * 0.1)
    assert routing_mismatch(routing, _record(model, ids, **pad_kw), mask=mask).max() > 0
    with torch.no_grad():
        padded_lp = model.token_logprobs(ids, routing=routing, **pad_kw)
        assert not torch.allclose(padded_lp, model.token_logprobs(ids, **pad_kw))  # replay is in effect
        for b, seq in enumerate(seqs):
            lp = model.token_logprobs(seq[None], routing=routing[:, b:b + 1, T - len(seq):])
            assert torch.allclose(padded_lp[b, T - len(seq):], lp[0], atol=1e-5)


def test_packed_rows_record_and_replay_like_separate_sequences():
    model = _model()
    a, b = _ids(1, 7, seed=4)[0], _ids(1, 6, seed=5)[0]
    packed = torch.cat([a, b])[None]
    segment_ids = torch.tensor([[0] * 7 + [1] * 6])
    routing = _record(model, packed, segment_ids=segment_ids)
    assert torch.equal(routing, torch.cat([_record(model, a[None]), _record(model, b[None])], dim=2))

    with torch.no_grad():
        for layer in model.layers:
            if layer.is_moe:
                layer.mlp.gate.weight.add_(torch.randn_like(layer.mlp.gate.weight) * 0.1)
        packed_lp = model.token_logprobs(packed, segment_ids=segment_ids, routing=routing)
        assert not torch.allclose(packed_lp, model.token_logprobs(packed, segment_ids=segment_ids))
        lp_a = model.token_logprobs(a[None], routing=routing[:, :, :7])
        lp_b = model.token_logprobs(b[None], routing=routing[:, :, 7:])
    assert torch.allclose(packed_lp[0, :6], lp_a[0], atol=1e-5)
    assert torch.allclose(packed_lp[0, 7:], lp_b[0], atol=1e-5)  # position 6 predicts across the boundary


def test_micro_batch_rows_take_the_same_rows_of_the_routing():
    model = _model()
    ids = _ids(4, 12)
    routing = _record(model, ids)
    with torch.no_grad():
        for layer in model.layers:
            if layer.is_moe:
                layer.mlp.gate.weight.add_(torch.randn_like(layer.mlp.gate.weight) * 0.1)
        full = model.token_logprobs(ids, routing=routing)
        part = model.token_logprobs(ids[1:3], routing=routing[:, 1:3])
        free = model.token_logprobs(ids)
    assert torch.allclose(full[1:3], part, atol=1e-5)
    assert not torch.allclose(full, free)


def test_balance_counts_follow_the_replayed_selection():
    model = _model()
    ids = _ids(2, 16)
    routing = _record(model, ids)
    routing[:, :, :, 0] = 5  # a selection free routing would not make: expert 5 first for every token
    routing[:, :, :, 1] = torch.where(routing[:, :, :, 1] == 5, 6, routing[:, :, :, 1])
    model.update_expert_bias(0.0)  # clear counts
    model.train()
    with torch.no_grad():
        model.token_logprobs(ids, routing=routing)
    loads = model.update_expert_bias(0.0)
    E = model.config.n_routed_experts
    expected = torch.stack([torch.bincount(r.flatten(), minlength=E) for r in routing]).float()
    assert torch.equal(loads[:model.n_routed_layers], expected)
    assert loads[model.n_routed_layers:].sum() == 0  # MTP blocks do not run when scoring


def test_routing_of_the_wrong_layout_is_refused():
    model = _model().eval()
    ids = _ids(2, 10)
    routing = _record(model, ids)
    with pytest.raises(ValueError, match="expected"):
        model.token_logprobs(ids[:, :9], routing=routing)
    dense = Transformer(ModelConfig.preset("dense-tiny", vocab_size=VOCAB, num_hidden_layers=2)).eval()
    assert _record(dense, ids).shape == (0, 2, 10, dense.config.num_experts_per_tok)
