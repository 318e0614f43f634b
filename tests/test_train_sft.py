"""Supervised data and LoRA: packing, prompt masking, deterministic batches, merged LoRA exports."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from rlpipe.config import StageConfig
from rlpipe.logging import read_metrics
from rlpipe.model import Transformer, load_pretrained
from rlpipe.train import SupervisedData, pack, seed_everything, train
from rlpipe.train.sft import IGNORE, Example, prompt_completion_examples, text_examples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_driver import synthetic_examples, tiny_model_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_pack_lays_examples_into_rows_with_segments():
    examples = [Example([10, 11, 12, 13, 14], [IGNORE, IGNORE, 12, 13, 14]),
                Example([20, 21, 22, 23], [20, 21, 22, 23]),
                Example([30, 31, 32, 33, 34, 35], [30, 31, 32, 33, 34, 35])]
    rows = pack(examples, seq_len=10, pad_id=2)
    assert len(rows) == 2  # 5 + 4 fit in one row, 6 starts the next
    assert rows.input_ids[0].tolist() == [10, 11, 12, 13, 14, 20, 21, 22, 23, 2]
    assert rows.segment_ids[0].tolist() == [1, 1, 1, 1, 1, 2, 2, 2, 2, 0]
    assert rows.position_ids[0].tolist()[:9] == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    # Segment starts carry no label (nothing in the segment predicts them); padding carries none either.
    assert rows.labels[0].tolist() == [IGNORE, IGNORE, 12, 13, 14, IGNORE, 21, 22, 23, IGNORE]
    assert rows.segment_ids[1].tolist() == [1] * 6 + [0] * 4
    unpacked = pack(examples, seq_len=10, pad_id=2, packing=False)
    assert len(unpacked) == 3


def test_packed_row_trains_exactly_like_the_examples_alone():
    seed_everything(0)
    model = Transformer(tiny_model_config()).eval()
    examples = synthetic_examples(3, seed=1)
    rows = pack(examples, seq_len=sum(len(e.input_ids) for e in examples) + 3, pad_id=2)
    assert len(rows) == 1
    batch = {k: torch.from_numpy(getattr(rows, k)) for k in ("input_ids", "labels", "position_ids", "segment_ids")}
    with torch.no_grad():
        packed = model(**batch)
        at, total, n_total = 0, 0.0, 0
        for ex in examples:
            ids = torch.tensor([ex.input_ids])
            labels = torch.tensor([ex.labels])
            labels[0, 0] = IGNORE
            alone = model(ids, labels=labels)
            L = len(ex.input_ids)
            torch.testing.assert_close(packed.logits[0, at:at + L], alone.logits[0], atol=1e-5, rtol=1e-5)
            n = int((labels[0, 1:] != IGNORE).sum())
            total += float(alone.main_loss) * n
            n_total += n
            at += L
    assert float(packed.main_loss) == pytest.approx(total / n_total, rel=1e-5)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from rlpipe.tokenizer import train_tokenizer

    texts = ["What is 12 + 30? <think> 12 + 30 = 42 </think> <answer> 42 </answer>",
             "解方程 2x = 6。 <think> x = 3 </think> <answer> x = 3 </answer>"] * 50
    return train_tokenizer(texts, 400, tmp_path_factory.mktemp("tok"))


def test_prompt_tokens_are_masked_and_completion_trained(tokenizer):
    from rlpipe.tokenizer import format_prompt

    prompt, solution = "What is 12 + 30?", "<think> 12 + 30 = 42 </think> <answer> 42 </answer>"
    (ex,), truncated = prompt_completion_examples(tokenizer, [prompt], [solution], seq_len=256)
    assert truncated == 0
    n_prompt = len(tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"])
    assert all(l == IGNORE for l in ex.labels[:n_prompt])
    trained = ex.labels[n_prompt:]
    assert IGNORE not in trained and trained == ex.input_ids[n_prompt:]
    assert trained[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(trained, skip_special_tokens=True) == solution
    # Too long: the completion's tail goes, the prompt stays masked, and the cut is counted.
    (short,), truncated = prompt_completion_examples(tokenizer, [prompt], [solution], seq_len=n_prompt + 3)
    assert truncated == 1 and len(short.input_ids) == n_prompt + 3


def test_text_documents_are_split_into_rows(tokenizer):
    text = "What is 12 + 30? " * 40
    examples = text_examples(tokenizer, [text], seq_len=32)
    ids = [t for ex in examples for t in ex.input_ids]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert all(len(ex.input_ids) <= 32 for ex in examples) and len(examples) > 1
    assert all(ex.labels == ex.input_ids for ex in examples)  # a plain LM loss on every token


def test_global_batch_is_the_same_rows_however_split():
    rows = pack(synthetic_examples(200, seed=0), 32, pad_id=2)
    one = SupervisedData(rows, micro_batch_size=4, grad_accum=2, world_size=1, seed=3, epochs=2)
    two = SupervisedData(rows, micro_batch_size=4, grad_accum=1, world_size=2, seed=3, epochs=2)
    assert one.num_steps == two.num_steps == 2 * (len(rows) // 8)
    for step in (0, 5, one.steps_per_epoch + 1):
        single = torch.cat([b["input_ids"] for b in one.micro_batches(step, 0)])
        split = torch.cat([two.micro_batches(step, r)[0]["input_ids"] for r in (0, 1)])
        assert torch.equal(single, split)
    # Deterministic from the seed; a new epoch is a new order of the same rows.
    again = SupervisedData(rows, micro_batch_size=4, grad_accum=2, seed=3, epochs=2)
    assert np.array_equal(one.global_rows(7), again.global_rows(7))
    epoch0 = np.concatenate([one.global_rows(s) for s in range(one.steps_per_epoch)])
    epoch1 = np.concatenate([one.global_rows(s) for s in range(one.steps_per_epoch, 2 * one.steps_per_epoch)])
    assert not np.array_equal(epoch0, epoch1) and len(set(epoch0)) == len(epoch0)
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        SupervisedData(rows, micro_batch_size=len(rows), grad_accum=2)


def test_lora_trains_adapters_and_saves_a_merged_plain_hf_folder(tmp_path):
    seed_everything(0)
    model = Transformer(tiny_model_config())
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = StageConfig(stage="lora", run="t", runs_dir=str(tmp_path))
    cfg.train.max_steps, cfg.train.micro_batch_size, cfg.train.save_every = 6, 4, 3
    cfg.lora.enabled, cfg.lora.r, cfg.lora.alpha = True, 4, 8
    cfg.optim.lr, cfg.optim.warmup_steps = 1e-2, 0
    rows = pack(synthetic_examples(64, seed=0), 32, pad_id=2)
    data = SupervisedData(rows, micro_batch_size=4, grad_accum=1, seed=0, max_steps=6)
    result = train(model, data, cfg, out_dir=cfg.out_dir)

    # The frozen base kept its weights (peft wrapped the targets in place: `x.base_layer.weight`);
    # the expert biases (buffers, which LoRA does not freeze) still moved.
    after = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert set(after) == set(base_before)
    for name, before in base_before.items():
        if "e_score_correction_bias" in name or "tokens_per_expert" in name:
            continue
        assert torch.equal(after[name], before), name
    biases = [k for k in base_before if k.endswith("e_score_correction_bias")]
    assert any(not torch.equal(after[k], base_before[k]) for k in biases)

    # The export merged W + BA: a plain Transformer whose weights differ from the base.
    exported = result.model
    assert type(exported) is Transformer
    q = "layers.0.self_attn.q_proj.weight"
    assert not torch.equal(exported.state_dict()[q], base_before[q])

    ckpt = cfg.out_dir / "checkpoints" / "step-000006" / "model"
    files = sorted(p.name for p in ckpt.iterdir())
    assert "adapter_config.json" not in files and "config.json" in files
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k]
    assert json.loads((ckpt / "config.json").read_text())["model_type"] == "deepseek_v3"
    reloaded = load_pretrained(ckpt)
    x = torch.from_numpy(rows.input_ids[:2])
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(x).logits, exported.eval()(x).logits, atol=1e-5, rtol=1e-5)


def test_lora_run_resumes_exactly(tmp_path):
    driver = ROOT / "tests" / "_train_driver.py"
    args = ["train.max_steps=8", "train.save_every=4", "train.keep_last=0", "lora.enabled=true", "lora.r=4",
            "optim.lr=1e-2"]
    full, part = tmp_path / "full", tmp_path / "part"
    proc = subprocess.run([sys.executable, str(driver), str(full), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Rewind a copy to its step-4 checkpoint, as if it had stopped there.
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "step-000008")
    shutil.rmtree(part / "final")
    proc = subprocess.run([sys.executable, str(driver), str(part), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resumed_from=4" in proc.stdout
    a = {r["step"]: r["loss"] for r in read_metrics(full / "metrics.jsonl")}
    b = {r["step"]: r["loss"] for r in read_metrics(part / "metrics.jsonl")}
    assert b[8] == pytest.approx(a[8], abs=1e-6)
    wa, wb = load_pretrained(full / "final").state_dict(), load_pretrained(part / "final").state_dict()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-6, rtol=0, msg=name)


def test_merged_state_dict_equals_peft_merge_without_touching_the_live_weights():
    import copy

    from rlpipe.config import LoraConfig
    from rlpipe.train.lora import apply_lora, base_model, export_model, merged_state_dict

    seed_everything(0)
    model = apply_lora(Transformer(tiny_model_config()), LoraConfig(r=4, alpha=8))
    with torch.no_grad():  # adapters away from their zero init, so the merge is not the identity
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    live = {k: v.clone() for k, v in model.state_dict().items()}
    reference = copy.deepcopy(model).merge_and_unload().state_dict()  # peft's own in-place merge

    for view in (model, base_model(model)):  # the PeftModel and the bare Transformer RL steps hold
        merged = merged_state_dict(view)
        assert set(merged) == set(reference)
        for k in reference:
            torch.testing.assert_close(merged[k], reference[k], atol=1e-6, rtol=0, msg=k)
    q = "layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged[q], live["base_model.model.layers.0.self_attn.q_proj.base_layer.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, live[k]), k  # nothing merged in place

    x = torch.randint(3, tiny_model_config().vocab_size, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(export_model(model).eval()(x).logits, model.eval()(x).logits, atol=1e-5, rtol=1e-5)
    assert merged_state_dict(Transformer(tiny_model_config())).keys() == reference.keys()  # no LoRA: as is


def test_lora_kl_reference_is_the_frozen_base_with_the_adapters_off():
    import copy

    from rlpipe.config import LoraConfig
    from rlpipe.train.lora import BaseReference, apply_lora, base_model

    seed_everything(0)
    start = Transformer(tiny_model_config())
    plain = copy.deepcopy(start).eval()
    policy = base_model(apply_lora(start, LoraConfig(r=4, alpha=8)))
    reference = BaseReference(policy)  # made before training moves the adapters, as the RL stage does
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    policy.train()
    loads = [m.tokens_per_expert.clone() for m in policy.moe_layers]
    x = torch.randint(3, tiny_model_config().vocab_size, (2, 12))
    ref = reference.score(x).logprobs
    with torch.no_grad():
        torch.testing.assert_close(ref, plain.score(x).logprobs, atol=1e-6, rtol=0)  # the starting weights
        assert policy.training  # the mode the pass found is restored
        assert not torch.allclose(policy.eval().score(x).logprobs, ref, atol=1e-3)  # adapters back on after
    for m, before in zip(policy.moe_layers, loads):
        assert torch.equal(m.tokens_per_expert, before)  # the reference pass counted no expert load
