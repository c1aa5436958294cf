"""The typed config: ${args}-style values, precedence, and every rule with its message."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from contract.config import (
    DEFAULTS,
    FIELDS,
    MNI152_SLICES,
    Config,
    build,
    coerce,
    help_text,
    load_yaml,
    parse_cli,
)
from contract.errors import ConfigError, UserError
from trainer.cli import resolve, split_config_file


def test_wandb_agent_args_are_python_reprs() -> None:
    # What `${args}` renders for a sweep over these values.
    argv = [
        "--channels=[32, 64]",
        "--num_res_blocks=[1, 2]",
        "--attention_levels=[False, True]",
        "--augment=True",
        "--nonlocal_attn=False",
        "--max_val_triplets=None",
        "--perceptual_weights_path=None",
        "--lr=0.001",
        "--kl_weight=1e-06",
        "--recon_loss=l2",
        "--data_dir=data/x y",
        "--image_size=32",
    ]
    cfg = build(parse_cli(argv))
    assert cfg.channels == (32, 64)
    assert cfg.num_res_blocks == (1, 2)
    assert cfg.attention_levels == (False, True)
    assert cfg.augment is True and cfg.nonlocal_attn is False
    assert cfg.max_val_triplets is None and cfg.perceptual_weights_path is None
    assert cfg.lr == 0.001 and cfg.kl_weight == 1e-6
    assert cfg.recon_loss == "l2" and cfg.data_dir == "data/x y"
    assert cfg.to_dict()["channels"] == [32, 64]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("True", True),
        ("true", True),
        ("False", False),
        ("false", False),
        (True, True),
        (0, False),
        (1, True),
    ],
)
def test_booleans(raw, expected) -> None:
    assert coerce("augment", raw) is expected


def test_space_separated_values_and_dashes() -> None:
    assert parse_cli(["--batch-size", "4", "--lr", "0.1"]) == {"batch_size": "4", "lr": "0.1"}


def test_precedence_defaults_file_cli_sweep(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text("batch_size: 4\nlr: 1.0e-3\nkl_weight: 1.0e-7\n")
    sweep = tmp_path / "params.yaml"  # W&B's `key: {value: v}` form, as wandb agent writes it
    sweep.write_text("kl_weight:\n  value: 1.0e-5\n")
    argv = ["--config", str(file), "--lr=0.01", "--kl_weight=1e-6"]
    cfg = resolve(argv, environ={"WANDB_SWEEP_PARAM_PATH": str(sweep)})
    assert cfg.max_epochs == DEFAULTS["max_epochs"]  # default
    assert cfg.batch_size == 4  # file over default
    assert cfg.lr == 0.01  # command line over file
    assert cfg.kl_weight == 1e-5  # sweep over command line
    assert resolve([f"--config={file}"], environ={}).lr == 1e-3


def test_config_file_argument_forms() -> None:
    assert split_config_file(["--config", "a.yaml", "--lr=1"]) == ("a.yaml", ["--lr=1"])
    assert split_config_file(["--config=b.yaml"]) == ("b.yaml", [])
    with pytest.raises(UserError, match="--config needs a file"):
        split_config_file(["--config"])


def test_unknown_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError) as err:
        parse_cli(["--kl_wieght=1e-6"])
    assert err.value.key == "kl_wieght"
    assert "unknown config key (did you mean kl_weight?)" in str(err.value)
    with pytest.raises(ConfigError, match="unknown config key"):
        build({"zzz_not_a_key": 1})


def test_defaults_build_and_train_a_sensible_small_vae() -> None:
    cfg = build()
    assert cfg == Config()
    assert cfg.channels == (32, 64, 64) and cfg.attention_per_level == (False, False, False)
    assert cfg.res_blocks_per_level == (1, 1, 1)


# (layer, key named in the error, words of the rule)
BAD = [
    ({"batch_size": "abc"}, "batch_size", "must be an integer"),
    ({"batch_size": True}, "batch_size", "must be an integer"),
    ({"batch_size": 2.5}, "batch_size", "must be an integer"),
    ({"lr": "fast"}, "lr", "must be a number"),
    ({"lr": True}, "lr", "must be a number"),
    ({"augment": "maybe"}, "augment", "must be true or false"),
    ({"augment": 2}, "augment", "must be true or false"),
    ({"recon_loss": "l3"}, "recon_loss", "must be one of l1, l2"),
    ({"data_source": 5}, "data_source", "must be a string"),
    ({"channels": 5}, "channels", "must be a list of integers"),
    ({"channels": ["a"]}, "channels", "must be an integer"),
    ({"num_res_blocks": "x"}, "num_res_blocks", "must be an integer"),
    ({"attention_levels": "x"}, "attention_levels", "must be a list of booleans"),
    ({"attention_levels": [2, 0, 1]}, "attention_levels", "must be true or false"),
    ({"max_val_triplets": "x"}, "max_val_triplets", "must be an integer"),
    *[({key: 0}, key, "must be >= 1") for key in ("in_channels", "latent_channels", "batch_size")],
    *[({key: 0}, key, "must be >= 1") for key in ("max_epochs", "n_train", "n_val", "log_every")],
    ({"norm_num_groups": 0}, "norm_num_groups", "must be >= 1"),
    ({"image_size": 0}, "image_size", "must be >= 1"),
    ({"spatial_dims": 1}, "spatial_dims", "must be 2 or 3"),
    ({"channels": []}, "channels", "at least one level"),
    ({"channels": [0, 16], "norm_num_groups": 1}, "channels", "must be >= 1"),
    ({"channels": [16, 24]}, "channels", "multiple of norm_num_groups=16"),
    ({"num_res_blocks": [1, 1]}, "num_res_blocks", "one entry per level of channels (3)"),
    ({"num_res_blocks": 0}, "num_res_blocks", "must be >= 1"),
    (
        {"attention_levels": [False, True]},
        "attention_levels",
        "one entry per level of channels (3)",
    ),
    ({"image_size": 30}, "image_size", "divisible by 2**(len(channels)-1) = 4"),
    ({"lr": 0}, "lr", "must be > 0"),
    ({"disc_lr": 0}, "disc_lr", "must be > 0"),
    ({"disc_channels": 0}, "disc_channels", "must be >= 1"),
    ({"disc_layers": 0}, "disc_layers", "must be >= 1"),
    ({"adv_warmup_epochs": -1}, "adv_warmup_epochs", "must be >= 0"),
    ({"adv_weight": -0.01}, "adv_weight", "must be >= 0"),
    (
        {"adv_weight": 0.01, "image_size": 16, "channels": [16]},
        "disc_layers",
        "needs image_size >= 3 * 2**disc_layers = 24 (image_size=16)",
    ),
    ({"kl_weight": -1e-6}, "kl_weight", "must be >= 0"),
    ({"perceptual_weight": -1}, "perceptual_weight", "must be >= 0"),
    ({"val_fraction": 1.0}, "val_fraction", "between 0 and 1"),
    ({"val_fraction": 0}, "val_fraction", "between 0 and 1"),
    ({"max_val_triplets": -1}, "max_val_triplets", "must be >= 0 or None"),
    ({"num_workers": -1}, "num_workers", "must be >= 0"),
    ({"data_source": "folder"}, "data_dir", "is required when data_source=folder"),
    ({"data_source": "datalist"}, "datalist", "is required when data_source=datalist"),
    ({"datalist": "list.json"}, "datalist", "is read only with data_source=datalist"),
    ({"intensity": "zscore"}, "intensity", "must be one of minmax, percentile"),
    ({"intensity": "percentile"}, "intensity", "images read from files"),
    ({"fit": "stretch"}, "fit", "must be one of pad_resize, resize, crop"),
    ({"stream_above_gb": -1}, "stream_above_gb", "must be >= 0"),
    ({"data_source": "mni152", "spatial_dims": 3}, "spatial_dims", "gives 2D slices"),
    ({"data_source": "mni152", "in_channels": 3}, "in_channels", "1-channel images"),
    ({"data_source": "mni152", "n_train": MNI152_SLICES}, "n_train", f"<= {MNI152_SLICES}"),
    (
        {"image_size": 4, "channels": [16], "norm_num_groups": 16},
        "image_size",
        "must be >= 8 for data_source=synthetic",
    ),
    (
        {"perceptual_weight": 1e-3, "perceptual_network": "medicalnet_resnet10_23datasets"},
        "perceptual_network",
        "need spatial_dims=3",
    ),
    (
        {"perceptual_weights_path": "w.pth"},
        "perceptual_weights_path",
        "perceptual_network=resnet50",
    ),
]


@pytest.mark.parametrize(
    ("layer", "key", "rule"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)]
)
def test_every_rule_names_key_value_and_rule(layer, key, rule) -> None:
    with pytest.raises(ConfigError) as err:
        build(layer)
    assert err.value.key == key
    assert rule in err.value.rule
    message = str(err.value)
    assert message.startswith(f"{key}=") and "\n" not in message


def test_cli_syntax_errors() -> None:
    with pytest.raises(UserError, match="unexpected argument 'lr=1'"):
        parse_cli(["lr=1"])
    with pytest.raises(ConfigError, match="needs a value"):
        parse_cli(["--lr"])


def test_yaml_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_yaml(listing)


def test_help_lists_every_key_with_its_default(tmp_path: Path) -> None:
    from conftest import PYTHON, offline_env

    proc = subprocess.run(
        [PYTHON, "-m", "trainer", "--help"],
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stdout.endswith(help_text() + "\n")
    for key in FIELDS:
        assert f"--{key}={DEFAULTS[key]!r}" in proc.stdout
    assert "torch" not in proc.stderr


def test_yaml_reads_wandb_agent_param_file(tmp_path: Path) -> None:
    """``wandb agent`` writes ``wandb_version: 1`` above the ``key: {value: v}`` entries."""
    params = tmp_path / "params.yaml"
    params.write_text(
        "wandb_version: 1\n\nchannels:\n  value:\n  - 16\n  - 32\nlr:\n  value: 0.001\n"
    )
    assert load_yaml(params) == {"channels": [16, 32], "lr": 0.001}


def test_unreadable_config_file_and_non_literal_values(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read the config file"):
        load_yaml(tmp_path)  # a folder
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00lr: 1")
    with pytest.raises(UserError):
        load_yaml(binary)
    # ast.literal_eval raises TypeError on this: the type check must still speak.
    with pytest.raises(ConfigError, match="must be a number"):
        build(parse_cli(["--lr={[]: 1}"]))
