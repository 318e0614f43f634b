"""Stage recipes: YAML + key=value overrides into typed dataclasses; user mistakes name key, source and fix."""

from pathlib import Path

import pytest

from rlpipe.config import BaseConfig, ColdStartConfig, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_shipped_recipes_load():
    base = load_config(ROOT / "stages" / "stage-0-base.yaml")
    cold = load_config(ROOT / "stages" / "stage-1-cold-start.yaml")
    assert isinstance(base, BaseConfig) and base.stage == "stage-0"
    assert isinstance(cold, ColdStartConfig) and cold.init_from == "stage-0"
    assert base.out_dir == Path("runs/default/stage-0")


def test_overrides_parse_values_by_field_type(tmp_path):
    path = write(tmp_path, "stage: stage-1\noptim:\n  lr: 1e-3\n")
    cfg = load_config(path, ["run=2024", "train.max_steps=7", "optim.lr=3e-4", "optim.betas=[0.8, 0.9]",
                             "train.packing=false", "lora.target_modules=q_proj,o_proj", "eval.k=8",
                             "eval.n_samples=8", "train.expert_bias_gamma=null"])
    assert cfg.run == "2024" and cfg.out_dir == Path("runs/2024/stage-1")
    assert cfg.train.max_steps == 7 and isinstance(cfg.train.max_steps, int)
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.optim.betas == (0.8, 0.9)
    assert cfg.train.packing is False
    assert cfg.lora.target_modules == ["q_proj", "o_proj"]
    assert (cfg.eval.k, cfg.eval.n_samples) == (8, 8)  # cross-field check runs after all overrides
    assert cfg.train.expert_bias_gamma is None


def test_yaml_float_written_without_dot_is_a_float(tmp_path):
    # PyYAML reads `1e-3` as a string; a float field must still take it.
    cfg = load_config(write(tmp_path, "stage: stage-0\noptim:\n  lr: 1e-3\n"))
    assert cfg.optim.lr == pytest.approx(1e-3)


def test_free_form_mapping_takes_new_keys(tmp_path):
    cfg = load_config(write(tmp_path, "stage: stage-0\n"), ["model.overrides.num_hidden_layers=2"])
    assert cfg.model.overrides == {"num_hidden_layers": 2}


def test_unknown_key_in_file_names_key_file_and_choices(tmp_path):
    path = write(tmp_path, "stage: stage-0\ntrain:\n  max_step: 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "'train.max_step'" in msg
    assert "did you mean 'max_steps'" in msg and "micro_batch_size" in msg


def test_unknown_override_names_the_command_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "stage: stage-0\n"), ["optim.learning_rate=1"])
    msg = str(err.value)
    assert "command-line override" in msg and "'optim.learning_rate'" in msg and "lr" in msg


def test_wrong_type_is_an_error(tmp_path):
    path = write(tmp_path, "stage: stage-0\ntrain:\n  seq_len: long\n")
    with pytest.raises(ConfigError, match=r"'train.seq_len' must be an integer, got 'long'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'train.packing' must be true or false"):
        load_config(write(tmp_path, "stage: stage-0\n"), ["train.packing=3"])
    with pytest.raises(ConfigError, match=r"'optim.betas' must be a list of 2 values"):
        load_config(write(tmp_path, "stage: stage-0\n"), ["optim.betas=[0.9]"])


def test_choice_field_lists_valid_choices(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "stage: stage-0\n"), ["logging.report_to=tensorboard"])
    assert "'logging.report_to'" in str(err.value) and "none, wandb" in str(err.value)


def test_cross_field_check_of_a_section(tmp_path):
    with pytest.raises(ConfigError, match="k <= n_samples"):
        load_config(write(tmp_path, "stage: stage-1\n"), ["eval.k=9"])


def test_unknown_stage_lists_stages(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "stage: stage-9\n"))
    assert "'stage'" in str(err.value) and "stage-0" in str(err.value) and "stage-1" in str(err.value)


def test_key_that_is_not_a_section(tmp_path):
    with pytest.raises(ConfigError, match="'train.seq_len' is a plain value"):
        load_config(write(tmp_path, "stage: stage-0\n"), ["train.seq_len.x=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(write(tmp_path, "stage: stage-0\n"), ["train.seq_len"])


@pytest.mark.parametrize("override, message", [
    ("grpo.slip_penalty=-1", "grpo.slip_penalty=-1.0: must be >= 0"),
    ("grpo.slip_correction=-0.5", "grpo.slip_correction=-0.5: must be >= 0"),
])
def test_negative_calculator_weights_are_refused(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, "stage: stage-2\n"), [override])
