"""Stage configuration: one dataclass per stage, loaded from `stages/<stage>.yaml` plus overrides.

- Shared nested sections: `OptimConfig` (AdamW + warm-up/cosine), `TrainConfig` (steps, batches,
  packing, checkpoints), `LoraConfig` (optional `peft` LoRA), `LoggingConfig` (metrics.jsonl, wandb).
- Stage dataclasses: `BaseConfig` (stage 0: data, tokenizer, model init, pretraining),
  `ColdStartConfig` (stage 1: SFT from stage 0, then evaluation), `ReasoningRLConfig` (stage 2:
  GRPO), `RejectionSFTConfig` (stage 3: rejection sampling + SFT), `AllScenariosRLConfig` (stage 4:
  reward model + GRPO over reasoning and general prompts). `STAGES` maps the recipe's
  `stage:` field to its dataclass, so `rlpipe run stages/<recipe>.yaml` knows what to build.
- `load_config(path, overrides)`: YAML, then `key=value` / `a.b=value` overrides from the command
  line. Unknown keys and wrong types are `ConfigError`s naming the key, where it came from (the
  file or the command line) and the valid choices.
- Run layout: every stage writes `runs/<run>/<stage>/` (`StageConfig.out_dir`); stages hand off
  through these folders only.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from rlpipe.evaluate import EvalConfig
from rlpipe.rejection import RejectionConfig
from rlpipe.rollout import RolloutConfig
from rlpipe.sampler import SamplerConfig
from rlpipe.train.reward_model import RewardModelConfig
from rlpipe.train.rl import GRPOConfig, RewardsConfig
from rlpipe.errors import ConfigError  # re-exported: the one user-error family (rlpipe.errors)


# ---------------------------------------------------------------------------- shared sections
@dataclass
class OptimConfig:
    """AdamW with a linear warm-up then a cosine decay to `min_lr_ratio * lr`."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping


@dataclass
class TrainConfig:
    """How long and on what batches to train. One optimizer step = micro_batch_size x grad_accum
    rows on every process, so the global batch is micro_batch_size x grad_accum x world_size."""

    max_steps: int = 0  # optimizer steps; 0 = derive from `epochs`
    epochs: float = 1.0
    micro_batch_size: int = 8
    grad_accum: int = 1
    seq_len: int = 256
    packing: bool = True  # several short examples per row (segment_ids keep them apart)
    seed: int = 0
    log_every: int = 1
    save_every: int = 100  # optimizer steps between checkpoints; 0 = only the final one
    keep_last: int = 2  # checkpoints kept on disk
    bf16: Literal["auto", "true", "false"] = "auto"  # auto: bf16 on a GPU that has it, fp32 on CPU
    num_threads: int = 0  # torch intra-op threads per process; 0 = torch's default
    expert_bias_gamma: float | None = None  # None: the model's bias_update_speed
    max_examples: int = 0  # use only the first N examples of the split (0 = all)


@dataclass
class LoraConfig:
    """Optional LoRA through `peft`; checkpoints are always written with the adapter merged."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"])


@dataclass
class LoggingConfig:
    """Where metrics go: always `metrics.jsonl` in the stage folder; wandb only when asked."""

    report_to: Literal["none", "wandb"] = "none"
    wandb_project: str = "rlpipe"
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"  # offline needs no network or account
    plots: bool = True


@dataclass
class ModelInitConfig:
    """A fresh model: a preset of `rlpipe.model.ModelConfig` plus field overrides (checked there)."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass
class TokenizerConfig:
    """The byte-level BPE of stage 0. `data.build` trains the same BPE on the same corpus (its token
    statistics are measured with it); with `reuse_data_tokenizer` stage 0 takes that one, so the
    lengths in the data manifest hold for the model. Otherwise it trains one with these settings."""

    reuse_data_tokenizer: bool = True
    vocab_size: int = 4096  # BPE target size (the trainer stops early when no pair occurs twice)
    max_texts: int = 0  # train the BPE on at most this many corpus texts (0 = all)


@dataclass
class DataConfig:
    """The task data `data.build` writes when the run's data folder does not exist yet."""

    size: str = "tiny"
    seed: int = 0


# ---------------------------------------------------------------------------- stages
@dataclass
class StageConfig:
    """Fields every stage has. `stage` is also the name of the stage's folder under the run."""

    stage: str = ""
    run: str = "default"
    runs_dir: str = "runs"
    data_dir: str = ""  # "" = runs/<run>/data
    resume: bool = True  # continue from the newest valid checkpoint in the stage folder
    # A finished stage (its folder holds stage.json) is not run again unless redo=true, which
    # deletes the stage folder first and runs it from scratch.
    redo: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.run

    @property
    def out_dir(self) -> Path:
        """`runs/<run>/<stage>/`: checkpoint (HF folder + tokenizer), metrics, plots, report."""
        return self.run_dir / self.stage

    def stage_dir(self, stage: str) -> Path:
        """Another stage's folder in the same run."""
        return self.run_dir / stage

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else self.run_dir / "data"


@dataclass
class BaseConfig(StageConfig):
    """Stage 0: build data, train the tokenizer, initialise the model, pretrain (next token + MTP)."""

    stage: str = "stage-0"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelInitConfig = field(default_factory=ModelInitConfig)
    split: str = "pretrain"  # datasets folder with a `text` column


@dataclass
class ColdStartConfig(StageConfig):
    """Stage 1: SFT of the stage-0 model on R1-format traces (prompt masked), then evaluation."""

    stage: str = "stage-1"
    init_from: str = "stage-0"  # a stage folder of this run, or a path to an HF checkpoint folder
    split: str = "sft"  # datasets folder with prompt + solution columns
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class ReasoningRLConfig(StageConfig):
    """Stage 2: GRPO-family RL from the stage-1 model with rule rewards, then evaluation."""

    stage: str = "stage-2"
    init_from: str = "stage-1"  # a stage folder of this run, or a path to an HF checkpoint folder
    split: str = "rl"  # datasets folder with prompt + answer/tests/numbers columns
    # Also evaluate the starting checkpoint (same grader, same split) for the report; false: compare
    # with the eval.json the starting stage wrote, if any (faster; its grader may be older).
    evaluate_init: bool = True
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class RejectionSFTConfig(StageConfig):
    """Stage 3: rejection sampling from the stage-2 model, then SFT on the verified traces, then evaluation."""

    stage: str = "stage-3"
    sample_from: str = "stage-2"  # the checkpoint rejection sampling draws from
    init_from: str = "stage-2"  # the checkpoint fine-tuned on the kept traces (R1: the base model, stage-0)
    rejection: RejectionConfig = field(default_factory=RejectionConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class AllScenariosRLConfig(ReasoningRLConfig):
    """Stage 4: a preference reward model, then GRPO over reasoning (rule rewards) and general (RM) prompts."""

    stage: str = "stage-4"
    init_from: str = "stage-3"
    general_split: str = "nonreasoning"  # datasets folder of general prompts (the RM pays them)
    general_share: float = 0.3  # share of all RL prompts that are general
    general_held_out: int = 64  # general prompts kept out of RL to measure the RM score before/after
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)


# Recipe `stage:` field -> (config dataclass, procedure module with `run(cfg)`, make target).
STAGES: dict[str, tuple[type[StageConfig], str, str]] = {
    "stage-0": (BaseConfig, "rlpipe.pipeline.base", "make stage-0"),
    "stage-1": (ColdStartConfig, "rlpipe.pipeline.cold_start", "make stage-1"),
    "stage-2": (ReasoningRLConfig, "rlpipe.pipeline.reasoning_rl", "make stage-2"),
    "stage-3": (RejectionSFTConfig, "rlpipe.pipeline.rejection_sft", "make stage-3"),
    "stage-4": (AllScenariosRLConfig, "rlpipe.pipeline.all_scenarios_rl", "make stage-4"),
}


# ---------------------------------------------------------------------------- loading
def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StageConfig:
    """Read a stage recipe and apply `key=value` overrides; the `stage:` field picks the dataclass."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: recipe not found (recipes live in stages/*.yaml)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of keys to values, got {type(raw).__name__}")
    stage = raw.get("stage")
    if stage not in STAGES:
        raise ConfigError(f"{path}: key 'stage' = {stage!r} is not a known stage; valid choices: "
                          f"{', '.join(STAGES)}")
    cls = STAGES[stage][0]
    cfg = build(cls, raw, source=str(path))
    for item in overrides:
        apply_override(cfg, item)
    if overrides:
        # Cross-field checks (e.g. eval.k <= eval.n_samples) run once all overrides are in, so
        # `eval.k=8 eval.n_samples=8` works in either order.
        _check_sections(cfg, f"{path} with overrides {' '.join(overrides)}")
    return cfg


def _check_sections(cfg, source: str, prefix: str = "") -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _check_sections(value, source, prefix + f.name + ".")
    post_init = getattr(cfg, "__post_init__", None)
    if post_init is not None:
        try:
            post_init()
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: {err}") from None


def build(cls: type, raw: dict, *, source: str, prefix: str = ""):
    """Make dataclass `cls` from a nested dict; unknown keys and wrong types raise ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key '{prefix.rstrip('.') or '<top>'}' must be a mapping, "
                          f"got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown_key(source, prefix + str(key), str(key), names)
        values[key] = _coerce(value, hints[key], source, prefix + key)
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:  # a section's own __post_init__ check
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: {err}") from None


def apply_override(cfg, item: str) -> None:
    """Apply one `a.b=value` override in place; the value is parsed as YAML (`1e-3`, `[a, b]`, `true`)."""
    source = f"command-line override {item!r}"
    if "=" not in item:
        raise ConfigError(f"{source}: expected key=value (e.g. train.max_steps=100)")
    dotted, text = item.split("=", 1)
    parts = dotted.strip().split(".")
    value = yaml.safe_load(text) if text.strip() else ""
    target = cfg
    for depth, part in enumerate(parts):
        key = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(target, dict):  # free-form mapping such as model.overrides
            if last:
                target[part] = value
                return
            target = target.setdefault(part, {})
            continue
        names = [f.name for f in dataclasses.fields(target)]
        if part not in names:
            raise _unknown_key(source, key, part, names)
        tp = typing.get_type_hints(type(target))[part]
        if last:
            setattr(target, part, _coerce(value, tp, source, key))
            return
        target = getattr(target, part)
        if not (dataclasses.is_dataclass(target) or isinstance(target, dict)):
            raise ConfigError(f"{source}: '{key}' is a plain value, it has no sub-key '{parts[depth + 1]}'")


def to_dict(cfg) -> dict:
    """Plain nested dict of a config (for config.yaml in the stage folder and for wandb)."""
    out = dataclasses.asdict(cfg)

    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return plain(out)


def save_config(cfg, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))


def _unknown_key(source: str, key: str, name: str, names: list[str]) -> ConfigError:
    hint = difflib.get_close_matches(name, names, n=1)
    did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
    return ConfigError(f"{source}: unknown key '{key}'{did_you_mean}; valid choices: {', '.join(names)}")


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return repr(tp).replace("typing.", "")
    return getattr(tp, "__name__", repr(tp))


def _coerce(value, tp, source: str, key: str):
    """Check `value` against annotation `tp`; return it converted (YAML gives '1e-3' as a string)."""

    def wrong(expected: str | None = None) -> ConfigError:
        return ConfigError(f"{source}: key '{key}' must be {expected or _type_name(tp)}, "
                           f"got {value!r} ({type(value).__name__})")

    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(tp)
        # `bf16: true` in YAML is a bool; the choice is spelled as a string.
        candidate = str(value).lower() if isinstance(value, bool) else value
        if candidate not in choices:
            raise ConfigError(f"{source}: key '{key}' = {value!r} is not valid; valid choices: "
                              f"{', '.join(map(str, choices))}")
        return candidate
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise wrong()
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, source, key)
            except ConfigError:
                continue
        raise wrong()
    if dataclasses.is_dataclass(tp):
        return build(tp, value, source=source, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise wrong("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise wrong("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise wrong("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `run=2024` is a name, not a number
        raise wrong("a string")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise wrong("a list")
        return [_coerce(v, item_tp, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        item_tps = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_tps):
            raise wrong(f"a list of {len(item_tps)} values")
        return tuple(_coerce(v, t, source, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, item_tps)))
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong("a mapping")
        return dict(value)
    raise AssertionError(f"config field {key}: unsupported annotation {tp!r}")
