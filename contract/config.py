"""The one typed config: names, types, defaults and validation of every hyperparameter.

The trainer, the sweep validator and the analysis all read it. It imports neither
torch nor MONAI, so a sweep validator can check thousands of combinations quickly.

Precedence, lowest first: defaults -> ``--config FILE.yaml`` -> ``--key=value`` on the
command line -> the sweep's values in ``wandb.config`` (applied by the trainer).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from contract.errors import ConfigError, UserError

RECON_LOSSES = ("l1", "l2")
DATA_SOURCES = ("synthetic", "folder", "datalist", "mni152")
# Sources whose images come from the user's files, where intensity scaling applies.
FILE_SOURCES = ("folder", "datalist")
INTENSITY_SCALINGS = ("minmax", "percentile")
FITS = ("pad_resize", "resize", "crop")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Axial slices of the MNI152 T1 template (nilearn's copy) with brain on at least 5% of the
# slice; trainer/data.py selects them by that rule and a test checks the two agree.
MNI152_SLICES = 137
# create_test_image_2d/3d draw blobs of radius up to image_size // 4 and need room for them.
MIN_SYNTHETIC_SIZE = 8
PERCEPTUAL_NETWORKS = (
    "alex",
    "vgg",
    "squeeze",
    "radimagenet_resnet50",
    "medicalnet_resnet10_23datasets",
    "medicalnet_resnet50_23datasets",
    "resnet50",
)


def _opt(kind: str, group: str, help: str, choices: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"kind": kind, "group": group, "help": help, "choices": choices}


@dataclass(frozen=True)
class Config:
    # --- model: monai.networks.nets.AutoencoderKL ---------------------------------------
    spatial_dims: int = field(
        default=2, metadata=_opt("int", "model", "2 for images, 3 for volumes")
    )
    in_channels: int = field(
        default=1, metadata=_opt("int", "model", "image channels (1 for MRI/CT)")
    )
    latent_channels: int = field(
        default=3, metadata=_opt("int", "model", "channels of the latent z")
    )
    channels: tuple[int, ...] = field(
        default=(32, 64, 64),
        metadata=_opt("ints", "model", "channels per level; the image shrinks 2x per extra level"),
    )
    num_res_blocks: int | tuple[int, ...] = field(
        default=1,
        metadata=_opt("int_or_ints", "model", "res blocks per level (one int or one per level)"),
    )
    attention_levels: tuple[bool, ...] | None = field(
        default=None,
        metadata=_opt(
            "bools_or_none", "model", "attention per level; None = none (level 0 is ~20x slower)"
        ),
    )
    norm_num_groups: int = field(
        default=16,
        metadata=_opt("int", "model", "GroupNorm groups; must divide every channel count"),
    )
    nonlocal_attn: bool = field(
        default=True,
        metadata=_opt("bool", "model", "MONAI's mid-block attention in encoder and decoder"),
    )

    # --- training --------------------------------------------------------------------------
    batch_size: int = field(
        default=8, metadata=_opt("int", "training", "images per optimizer step")
    )
    lr: float = field(default=2e-4, metadata=_opt("float", "training", "Adam learning rate"))
    max_epochs: int = field(default=10, metadata=_opt("int", "training", "epochs to train"))
    # The run judges its own curve so far after each epoch with the analysis's overfitting test
    # (contract/trends.py), on W&B as on the local engine: no controller sees it sooner.
    early_stop: bool = field(
        default=False,
        metadata=_opt(
            "bool", "training", "stop once the guide's overfitting test is real (keeps best.pt)"
        ),
    )
    early_stop_patience: float = field(
        default=0.2,
        metadata=_opt(
            "float",
            "training",
            "early_stop: the test must hold this share of the epochs so far in a row (>= 3)",
        ),
    )
    kl_weight: float = field(
        default=1e-6,
        metadata=_opt("float", "training", "weight of the KL term (MONAI recipe: ~1e-6)"),
    )
    perceptual_weight: float = field(
        default=0.0,
        metadata=_opt(
            "float", "training", "weight of the perceptual loss; 0 = off (needs local weights)"
        ),
    )
    perceptual_network: str = field(
        default="squeeze",
        metadata=_opt(
            "choice", "training", "backbone of MONAI's PerceptualLoss", PERCEPTUAL_NETWORKS
        ),
    )
    perceptual_weights_path: str | None = field(
        default=None,
        metadata=_opt("str_or_none", "training", "local weights file for the perceptual backbone"),
    )
    recon_loss: str = field(
        default="l1", metadata=_opt("choice", "training", "reconstruction loss", RECON_LOSSES)
    )
    seed: int = field(default=0, metadata=_opt("int", "training", "seeds data, init and sampling"))
    precision: str = field(
        default="auto",
        metadata=_opt(
            "choice", "training", "auto = bf16/fp16 autocast on CUDA, fp32 on CPU", PRECISIONS
        ),
    )
    compile: bool = field(
        default=False,
        metadata=_opt("bool", "training", "torch.compile the model (slow first step)"),
    )
    # MONAI's adversarial term: a PatchGAN discriminator with a least-squares loss.
    adv_weight: float = field(
        default=0.0,
        metadata=_opt(
            "float", "training", "weight of the adversarial term; 0 = off (MONAI recipe: 0.01)"
        ),
    )
    adv_warmup_epochs: int = field(
        default=5,
        metadata=_opt(
            "int", "training", "epochs trained without the adversarial term first (MONAI: 5)"
        ),
    )
    disc_lr: float = field(
        default=5e-4,
        metadata=_opt("float", "training", "Adam learning rate of the discriminator (MONAI: 5e-4)"),
    )
    disc_channels: int = field(
        default=64,
        metadata=_opt(
            "int", "training", "channels of the discriminator's first layer (MONAI: 64 2D, 32 3D)"
        ),
    )
    disc_layers: int = field(
        default=3,
        metadata=_opt(
            "int",
            "training",
            "downsampling layers of the discriminator; needs image_size >= 3*2**N",
        ),
    )

    # --- data ------------------------------------------------------------------------------
    data_source: str = field(
        default="synthetic",
        metadata=_opt(
            "choice", "data", "synthetic blobs, a folder of images, or MNI152 slices", DATA_SOURCES
        ),
    )
    data_dir: str | None = field(
        default=None,
        metadata=_opt(
            "str_or_none", "data", "folder of PNG/JPEG/NIfTI images (data_source=folder)"
        ),
    )
    datalist: str | None = field(
        default=None,
        metadata=_opt(
            "str_or_none",
            "data",
            "MONAI datalist JSON, training/validation lists of {image: path} (data_source=datalist)",
        ),
    )
    intensity: str = field(
        default="minmax",
        metadata=_opt(
            "choice",
            "data",
            "file images to [0, 1]: min-max, or percentiles 0-99.5 (MONAI's 3D recipe)",
            INTENSITY_SCALINGS,
        ),
    )
    fit: str = field(
        default="pad_resize",
        metadata=_opt(
            "choice",
            "data",
            "to image_size: pad to a square/cube then resize, resize each axis, or centre crop/pad",
            FITS,
        ),
    )
    image_size: int = field(
        default=64,
        metadata=_opt("int", "data", "side of the square/cubic images; divisible by 2**(levels-1)"),
    )
    n_train: int = field(
        default=64, metadata=_opt("int", "data", "training images (synthetic, mni152)")
    )
    n_val: int = field(
        default=16, metadata=_opt("int", "data", "validation images (synthetic, mni152)")
    )
    val_fraction: float = field(
        default=0.2,
        metadata=_opt("float", "data", "validation share of a folder without train/ and val/"),
    )
    augment: bool = field(
        default=False,
        metadata=_opt("bool", "data", "random flips/rotations/affine on training images"),
    )
    num_workers: int = field(
        default=0,
        metadata=_opt(
            "int", "data", "DataLoader workers that read (streamed) and augment batches; 0 = none"
        ),
    )
    stream_above_gb: float = field(
        default=2.0,
        metadata=_opt(
            "float",
            "data",
            "splits (train + val) larger than this stream from the cache; 0 = always",
        ),
    )
    cache_dir: str | None = field(
        default=None,
        metadata=_opt(
            "str_or_none",
            "data",
            "preprocessed splits; None = $VAE_SWEEPS_CACHE or ~/.cache/vae-sweeps",
        ),
    )

    # --- logging and outputs ---------------------------------------------------------------
    max_val_triplets: int | None = field(
        default=None,
        metadata=_opt(
            "int_or_none", "logging", "cap on val/triplet_stepXXX images; None = all samples"
        ),
    )
    log_every: int = field(
        default=50,
        metadata=_opt(
            "int",
            "logging",
            "losses reach the host every N steps and at epoch end (still one row per step)",
        ),
    )
    output_dir: str = field(
        default="outputs", metadata=_opt("str", "logging", "checkpoints and wandb/ go under it")
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-friendly values (lists, not tuples), as logged to W&B."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    # Derived values: what the model actually gets.
    @property
    def levels(self) -> int:
        return len(self.channels)

    @property
    def res_blocks_per_level(self) -> tuple[int, ...]:
        if isinstance(self.num_res_blocks, int):
            return (self.num_res_blocks,) * self.levels
        return tuple(self.num_res_blocks)

    @property
    def attention_per_level(self) -> tuple[bool, ...]:
        if self.attention_levels is None:
            return (False,) * self.levels
        return tuple(self.attention_levels)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (self.levels - 1)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in fields(Config)}
DEFAULTS: dict[str, Any] = Config().to_dict()


# --- parsing ---------------------------------------------------------------------------------
def _literal(raw: Any) -> Any:
    """Read a command-line string the way ``wandb agent``'s ``${args}`` writes it (Python reprs)."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if text.lower() in ("none", "null", "~"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text  # not a Python literal (e.g. a path): the field's type check decides


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(key, value, "must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ConfigError(key, value, "must be an integer")


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, value, "must be a number")
    return float(value)


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(key, value, "must be true or false")


def _as_list(key: str, value: Any, what: str) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ConfigError(key, value, f"must be a list of {what}")


def coerce(key: str, raw: Any) -> Any:
    """Check one value against its field's type; convert reprs and lists. Raises ConfigError."""
    if key not in FIELDS:
        raise unknown_key(key, raw)
    kind = FIELDS[key].metadata["kind"]
    value = _literal(raw)
    if kind == "int":
        return _as_int(key, value)
    if kind == "float":
        return _as_float(key, value)
    if kind == "bool":
        return _as_bool(key, value)
    if kind in ("str", "choice"):
        if not isinstance(value, str):
            value = str(raw) if isinstance(raw, str) else value
        if not isinstance(value, str):
            raise ConfigError(key, value, "must be a string")
        choices = FIELDS[key].metadata["choices"]
        if choices and value not in choices:
            raise ConfigError(key, value, f"must be one of {', '.join(choices)}")
        return value
    if kind == "str_or_none":
        if value is None:
            return None
        return str(raw) if isinstance(raw, str) else str(value)
    if kind == "int_or_none":
        return None if value is None else _as_int(key, value)
    if kind == "ints":
        return tuple(_as_int(key, v) for v in _as_list(key, value, "integers"))
    if kind == "int_or_ints":
        if isinstance(value, (list, tuple)):
            return tuple(_as_int(key, v) for v in value)
        return _as_int(key, value)
    if kind == "bools_or_none":
        if value is None:
            return None
        return tuple(_as_bool(key, v) for v in _as_list(key, value, "booleans"))
    raise AssertionError(f"unhandled kind {kind!r} for {key}")


def unknown_key(key: str, value: Any) -> ConfigError:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(key, value, f"unknown config key{hint}")


# --- validation -------------------------------------------------------------------------------
def check(cfg: Config) -> None:
    """Rules across keys. Raises ConfigError on the first broken one."""
    positive = (
        "in_channels",
        "latent_channels",
        "norm_num_groups",
        "batch_size",
        "max_epochs",
    )
    for key in (*positive, "image_size", "n_train", "n_val", "log_every"):
        if getattr(cfg, key) < 1:
            raise ConfigError(key, getattr(cfg, key), "must be >= 1")
    if cfg.spatial_dims not in (2, 3):
        raise ConfigError("spatial_dims", cfg.spatial_dims, "must be 2 or 3")
    if not cfg.channels:
        raise ConfigError("channels", list(cfg.channels), "must list at least one level")
    for c in cfg.channels:
        if c < 1:
            raise ConfigError("channels", list(cfg.channels), "every channel count must be >= 1")
        if c % cfg.norm_num_groups:
            raise ConfigError(
                "channels",
                list(cfg.channels),
                f"every channel count must be a multiple of norm_num_groups={cfg.norm_num_groups}",
            )
    if not isinstance(cfg.num_res_blocks, int) and len(cfg.num_res_blocks) != cfg.levels:
        raise ConfigError(
            "num_res_blocks",
            list(cfg.num_res_blocks),
            f"needs one entry per level of channels ({cfg.levels}), or a single integer",
        )
    if any(n < 1 for n in cfg.res_blocks_per_level):
        raise ConfigError("num_res_blocks", cfg.num_res_blocks, "must be >= 1")
    if cfg.attention_levels is not None and len(cfg.attention_levels) != cfg.levels:
        raise ConfigError(
            "attention_levels",
            list(cfg.attention_levels),
            f"needs one entry per level of channels ({cfg.levels})",
        )
    if cfg.image_size % cfg.downsample_factor:
        raise ConfigError(
            "image_size",
            cfg.image_size,
            f"must be divisible by 2**(len(channels)-1) = {cfg.downsample_factor}",
        )
    if not 0 < cfg.early_stop_patience < 1:
        raise ConfigError("early_stop_patience", cfg.early_stop_patience, "must be in (0, 1)")
    for key in ("lr", "disc_lr"):
        if not getattr(cfg, key) > 0:
            raise ConfigError(key, getattr(cfg, key), "must be > 0")
    for key in ("disc_channels", "disc_layers"):
        if getattr(cfg, key) < 1:
            raise ConfigError(key, getattr(cfg, key), "must be >= 1")
    if cfg.adv_warmup_epochs < 0:
        raise ConfigError("adv_warmup_epochs", cfg.adv_warmup_epochs, "must be >= 0")
    # Each layer halves the image, and the last two 4-wide convolutions need 3 pixels left.
    if cfg.adv_weight > 0 and cfg.image_size < 3 * 2**cfg.disc_layers:
        raise ConfigError(
            "disc_layers",
            cfg.disc_layers,
            f"needs image_size >= 3 * 2**disc_layers = {3 * 2**cfg.disc_layers} "
            f"(image_size={cfg.image_size}); use fewer layers or larger images",
        )
    for key in ("kl_weight", "perceptual_weight", "adv_weight"):
        if not getattr(cfg, key) >= 0:
            raise ConfigError(key, getattr(cfg, key), "must be >= 0")
    if not 0 < cfg.val_fraction < 1:
        raise ConfigError("val_fraction", cfg.val_fraction, "must be between 0 and 1 (exclusive)")
    if cfg.max_val_triplets is not None and cfg.max_val_triplets < 0:
        raise ConfigError("max_val_triplets", cfg.max_val_triplets, "must be >= 0 or None")
    if cfg.num_workers < 0:
        raise ConfigError("num_workers", cfg.num_workers, "must be >= 0")
    if cfg.data_source == "folder" and not cfg.data_dir:
        raise ConfigError("data_dir", cfg.data_dir, "is required when data_source=folder")
    if cfg.data_source == "datalist" and not cfg.datalist:
        raise ConfigError("datalist", cfg.datalist, "is required when data_source=datalist")
    if cfg.datalist and cfg.data_source != "datalist":
        raise ConfigError("datalist", cfg.datalist, "is read only with data_source=datalist")
    if cfg.intensity != "minmax" and cfg.data_source not in FILE_SOURCES:
        raise ConfigError(
            "intensity",
            cfg.intensity,
            f"applies to images read from files (data_source={' or '.join(FILE_SOURCES)})",
        )
    if not cfg.stream_above_gb >= 0:
        raise ConfigError("stream_above_gb", cfg.stream_above_gb, "must be >= 0")
    if cfg.data_source == "mni152" and cfg.spatial_dims != 2:
        raise ConfigError(
            "spatial_dims", cfg.spatial_dims, "data_source=mni152 gives 2D slices: use 2"
        )
    if cfg.data_source == "mni152" and cfg.in_channels != 1:
        raise ConfigError(
            "in_channels", cfg.in_channels, "data_source=mni152 gives 1-channel images: use 1"
        )
    if cfg.data_source == "mni152" and cfg.n_train + cfg.n_val > MNI152_SLICES:
        raise ConfigError(
            "n_train",
            cfg.n_train,
            f"n_train + n_val (= {cfg.n_train + cfg.n_val}) must be <= {MNI152_SLICES}, "
            "the usable slices of the MNI152 template",
        )
    if cfg.data_source == "synthetic" and cfg.image_size < MIN_SYNTHETIC_SIZE:
        raise ConfigError(
            "image_size",
            cfg.image_size,
            f"must be >= {MIN_SYNTHETIC_SIZE} for data_source=synthetic",
        )
    if (
        cfg.perceptual_weight > 0
        and cfg.perceptual_network.startswith("medicalnet")
        and cfg.spatial_dims != 3
    ):
        raise ConfigError(
            "perceptual_network", cfg.perceptual_network, "MedicalNet backbones need spatial_dims=3"
        )
    if cfg.perceptual_weights_path and cfg.perceptual_network != "resnet50":
        raise ConfigError(
            "perceptual_weights_path",
            cfg.perceptual_weights_path,
            "only MONAI's resnet50 backbone loads a local file: use perceptual_network=resnet50 "
            "(other backbones read the torch hub cache under TORCH_HOME)",
        )


def build(*layers: Mapping[str, Any]) -> Config:
    """Defaults, then each layer in order (later wins); every value type-checked, then rules."""
    values: dict[str, Any] = {}
    for layer in layers:
        for key, raw in layer.items():
            values[key] = coerce(key, raw)
    cfg = Config(**values)
    check(cfg)
    return cfg


# --- sources ------------------------------------------------------------------------------
# Bookkeeping keys wandb writes into config files (``wandb agent``'s WANDB_SWEEP_PARAM_PATH
# starts with ``wandb_version: 1``); wandb's own reader drops them too.
WANDB_FILE_KEYS = frozenset({"wandb_version", "_wandb"})


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A flat ``key: value`` YAML file (W&B's ``key: {value: v}`` form is accepted too)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the config file ({exc.__class__.__name__})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return {
        k: v["value"] if isinstance(v, dict) and "value" in v else v
        for k, v in data.items()
        if k not in WANDB_FILE_KEYS
    }


def parse_cli(argv: Iterable[str]) -> dict[str, Any]:
    """``--key=value`` or ``--key value`` pairs, as ``wandb agent``'s ``${args}`` renders them."""
    out: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise UserError(f"unexpected argument {arg!r}: use --key=value")
        key, sep, raw = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(key, None, "needs a value: --key=value")
            raw = args[i + 1]
            i += 1
        key = key.replace("-", "_")
        if key not in FIELDS:
            raise unknown_key(key, raw)
        out[key] = raw
        i += 1
    return out


def help_text() -> str:
    """Every key with its default, grouped, for ``python -m trainer --help``."""
    lines: list[str] = []
    group = None
    for f in fields(Config):
        meta = f.metadata
        if meta["group"] != group:
            group = meta["group"]
            lines.append(f"\n{group}:")
        default = DEFAULTS[f.name]
        lines.append(f"  {f'--{f.name}={default!r}':<36} {meta['help']}")
    return "\n".join(lines)
