"""Generation with the MLA latent cache: equals full recomputation, handles left padding, samples correctly."""

import pytest
import torch

from rlpipe.model import ModelConfig, Transformer, generate


PAD, EOS = 2, 1


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", vocab_size=200, num_hidden_layers=3, q_lora_rank=48)
    m = Transformer(config).eval()
    with torch.no_grad():  # separated router scores: no near-ties that rounding could flip
        for moe in m.moe_layers:
            moe.gate.weight.normal_(0.0, 0.1)
        m.lm_head.weight.mul_(20)  # a peaked distribution: greedy margins far above rounding error
    return m


def _greedy_full_recompute(model, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_cached_greedy_equals_full_recompute_with_left_padding(model):
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 200, (n,), generator=g).tolist() for n in (5, 11, 1, 8)]
    out = generate(model, prompts, max_new_tokens=12, temperature=0.0, eos_token_id=None, pad_token_id=PAD)
    for prompt, tokens in zip(prompts, out.tokens):
        assert tokens == _greedy_full_recompute(model, prompt, 12)


def test_logprobs_are_raw_model_logprobs_of_the_sampled_tokens(model):
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14]]
    out = generate(model, prompts, max_new_tokens=10, temperature=0.7, top_p=0.9, eos_token_id=None,
                   pad_token_id=PAD, generator=torch.Generator().manual_seed(0))
    for prompt, tokens, logprobs in zip(prompts, out.tokens, out.logprobs):
        assert len(tokens) == len(logprobs) == 10
        with torch.no_grad():
            ref = model.token_logprobs(torch.tensor([prompt + tokens]))[0, len(prompt) - 1:]
        assert torch.allclose(torch.tensor(logprobs), ref, atol=1e-4)


def test_sampling_is_seeded_and_respects_top_p(model):
    prompts = [[5, 6, 7]] * 4
    kw = dict(max_new_tokens=8, temperature=1.5, eos_token_id=None, pad_token_id=PAD)
    a = generate(model, prompts, generator=torch.Generator().manual_seed(3), **kw)
    b = generate(model, prompts, generator=torch.Generator().manual_seed(3), **kw)
    assert a.tokens == b.tokens
    assert len({tuple(t) for t in a.tokens}) > 1  # temperature 1.5: rows differ
    # top_p -> 0 keeps only the most likely token: identical to greedy
    nucleus = generate(model, prompts, top_p=1e-6, generator=torch.Generator().manual_seed(3), **kw)
    greedy = generate(model, prompts, max_new_tokens=8, temperature=0.0, eos_token_id=None, pad_token_id=PAD)
    assert nucleus.tokens == greedy.tokens


def test_stops_at_eos_per_sequence(model):
    prompts = [[5, 6, 7], [30, 31]]
    free = generate(model, prompts, max_new_tokens=6, temperature=0.0, eos_token_id=None, pad_token_id=PAD)
    eos = free.tokens[0][2]  # make row 0's third greedy token the stop token
    out = generate(model, prompts, max_new_tokens=6, temperature=0.0, eos_token_id=eos, pad_token_id=PAD)
    assert out.tokens[0] == free.tokens[0][:3]
    cut = free.tokens[1].index(eos) + 1 if eos in free.tokens[1] else 6
    assert out.tokens[1] == free.tokens[1][:cut]
    assert len(out.logprobs[0]) == 3


def test_latent_cache_matches_expanded_attention_at_each_step(model):
    """MLA.decode (absorbed W_UK/W_UV over the latent cache) == the expanded training attention."""
    attn = model.layers[1].self_attn
    cfg = model.config
    x = torch.randn(2, 9, cfg.hidden_size)
    pos = torch.arange(9).expand(2, 9)
    cos, sin = model.rotary(pos)
    with torch.no_grad():
        full = attn(x, cos, sin)
        cache = torch.zeros(2, 9, cfg.kv_lora_rank + cfg.qk_rope_head_dim)
        attn(x[:, :8], cos[:, :8], sin[:, :8], latent_cache=cache[:, :8])
        step = attn.decode(x[:, 8:], cos[:, 8:], sin[:, 8:], cache, torch.ones(2, 9, dtype=torch.bool))
    assert torch.allclose(step[:, 0], full[:, 8], atol=1e-5)


def test_bad_prompts_are_rejected(model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[1], []], max_new_tokens=2, eos_token_id=None, pad_token_id=PAD)
