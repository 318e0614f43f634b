"""Logit parity: our Transformer vs transformers' DeepseekV3ForCausalLM loaded from the same saved folder.

transformers is an implementation nobody here wrote; agreement to 1e-4 (fp32) checks MLA, the
interleaved decoupled RoPE, the sigmoid router with bias and group-limited routing, shared experts,
dense-first layers and the checkpoint format (per-expert keys, MTP layer set aside) at once.
Router weights are enlarged and the bias randomised so expert choices are far from ties and the
bias really changes selection. transformers 5.19 masks dropped groups with -inf, like the DeepSeek
reference and vLLM (older versions used 0.0 and disagreed when biased scores were negative), so the
grouped config with negative biases is compared too.
"""

import pytest
import torch

from rlpipe.model import ModelConfig, Transformer

transformers = pytest.importorskip("transformers")


def _separate_router(model: Transformer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for moe in model.moe_layers:
            moe.gate.weight.normal_(0.0, 0.1, generator=g)
            moe.gate.e_score_correction_bias.normal_(0.0, 0.3, generator=g)


def _load_hf(path):
    transformers.logging.set_verbosity_error()  # the MTP layer's keys are "unexpected" to transformers
    return transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


CASES = {
    "tiny-ngroup1-mtp": dict(),
    "grouped-qlora-scaled": dict(n_group=4, topk_group=2, routed_scaling_factor=2.5, q_lora_rank=64,
                                 num_experts_per_tok=3),
    "dense": dict(first_k_dense_replace=4, num_nextn_predict_layers=0),
    "two-shared-unnormalised": dict(n_shared_experts=2, norm_topk_prob=False, num_nextn_predict_layers=2),
}


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(tmp_path, name):
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", vocab_size=512, **CASES[name])
    model = Transformer(config).eval()
    _separate_router(model, 1)
    model.save_pretrained(tmp_path)
    hf = _load_hf(tmp_path)
    assert type(hf).__name__ == "DeepseekV3ForCausalLM"
    ids = torch.randint(0, config.vocab_size, (3, 48), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = model(ids).logits, hf(ids).logits
    assert ours.shape == theirs.shape == (3, 48, config.vocab_size)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_bias_changes_routing_in_the_compared_model(tmp_path):
    """The parity above is not vacuous: with the bias zeroed, logits move far beyond the tolerance."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=512)).eval()
    _separate_router(model, 1)
    ids = torch.randint(0, 512, (2, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        with_bias = model(ids).logits
        for moe in model.moe_layers:
            moe.gate.e_score_correction_bias.zero_()
        without = model(ids).logits
    assert (with_bias - without).abs().max().item() > 1e-3


def test_transformers_loss_matches_main_loss(tmp_path):
    """HF's label shifting and ours agree (labels at input positions, -100 ignored)."""
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", vocab_size=512, num_nextn_predict_layers=0, balance_loss_alpha=0.0)
    model = Transformer(config).eval()
    model.save_pretrained(tmp_path)
    hf = _load_hf(tmp_path)
    ids = torch.randint(0, 512, (2, 20), generator=torch.Generator().manual_seed(4))
    labels = ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        ours = model(ids, labels=labels)
        theirs = hf(ids, labels=labels)
    assert abs(ours.main_loss.item() - theirs.loss.item()) < 1e-5
    assert ours.loss.item() == pytest.approx(ours.main_loss.item())
