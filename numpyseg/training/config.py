"""The options of a training run, their defaults, and which of them a resume may change.

A run is defined by its `TrainConfig`.  The config is stored in every checkpoint,
so `numpyseg train --out RUN --resume` rebuilds exactly the same run (data,
split, model, loss, optimiser, schedules, seed) and continues it.  Only the
*session* options below may differ on a resume: how long to go on (epochs, time
limit), how chatty to be, and where the data now lives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from numpyseg.errors import ConfigError
from numpyseg.validate import check_int, check_number

DATASETS = ("synthetic", "drive", "stare", "chase", "folder")
ARCHS = ("sa_unetv2", "sa_unet")
SCHEDULES = ("plateau", "cosine")

#: Metrics the best checkpoint can be chosen by, with the direction that is better.
MONITORS = {"val_loss": "min", "train_loss": "min", "val_f1": "max", "val_auc": "max",
            "val_mcc": "max", "val_iou": "max", "val_acc": "max", "val_sen": "max"}

#: Bounds that keep a mistyped size from exhausting a CPU's memory (a 4096 x 4096
#: image is 200 MB as float32 RGB; the model's activations are ~100x the image).
MAX_SYNTHETIC_SIZE, MAX_SYNTHETIC_COUNT, MAX_PATCH_SIZE, MAX_BATCH_SIZE = 4096, 10000, 4096, 1024
#: Gamma jitter exp(+-g): beyond e^3 ~ 20 the images are black or white.
MAX_GAMMA = 3.0

#: Options a resumed run may change; every other option must match the checkpoint.
SESSION_KEYS = ("epochs", "time_limit", "log_every", "data_root", "images", "labels", "masks")


@dataclass
class TrainConfig:
    """Every option of `numpyseg train` (see `numpyseg train --help` for each one).

    Data:        dataset, data_root, images/labels/masks (dataset 'folder'),
                 synthetic_count, synthetic_size, val_fraction, val_count.
    Model:       arch, base_channels, dropblock_rate, block_size, seed.
    Optimiser:   lr (Adam), schedule ('plateau': patience_lr / lr_factor / min_lr,
                 ReduceLROnPlateau on the validation loss; 'cosine': cosine decay to min_lr
                 over the epochs after warmup_epochs of linear warm-up), ema (decay of
                 the weights' moving average; 0 = off), early_stop (patience on the
                 validation loss; 0 = off).
    Loss:        bce_weight, mcc_weight, pos_weight (a number or 'balanced'),
                 loss_fov (also leave pixels outside the field of view out of the loss;
                 padding is always left out).
    Batches:     batch_size, patch_size (0: whole padded images), steps_per_epoch
                 (0: automatic), augmentation switches.
    Selection:   monitor (None: 'val_f1' when there is a validation split, else
                 'train_loss').
    Session:     epochs, time_limit (minutes), log_every (steps; 0: automatic).
    """

    dataset: str = "synthetic"
    data_root: str | None = None
    images: str | None = None
    labels: str | None = None
    masks: str | None = None
    synthetic_count: int = 20
    synthetic_size: int = 128
    epochs: int = 50
    batch_size: int = 4
    patch_size: int = 0
    steps_per_epoch: int = 0
    lr: float = 1e-3
    bce_weight: float = 0.5
    mcc_weight: float = 0.5
    pos_weight: float | str = 1.0
    dropblock_rate: float = 0.15
    block_size: int = 7
    base_channels: int = 16
    arch: str = "sa_unetv2"
    seed: int = 0
    val_fraction: float = 0.2
    val_count: int | None = None
    patience_lr: int = 10
    lr_factor: float = 0.5
    min_lr: float = 1e-6
    early_stop: int = 20
    schedule: str = "plateau"
    warmup_epochs: int = 0
    ema: float = 0.0
    monitor: str | None = None
    loss_fov: bool = False
    augment: bool = True
    flip: bool = True
    rot90: bool = True
    rotate: float = 15.0
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.1
    log_every: int = 0
    time_limit: float | None = None

    def __post_init__(self):
        self.validate()

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Check every option; raise a one-line ConfigError naming the first bad one.

        Whole numbers must be whole, real numbers finite (argparse accepts 'nan'),
        and sizes stay below bounds that fit a CPU's memory (MAX_SYNTHETIC_SIZE,
        MAX_PATCH_SIZE, MAX_BATCH_SIZE); the model's values are checked by
        `numpyseg.models.unet.check_model_options`.
        """
        from numpyseg.models.unet import check_model_options

        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.arch not in ARCHS:
            raise ConfigError(f"--arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        for name, low, high in (("epochs", 1, None), ("batch_size", 1, MAX_BATCH_SIZE),
                                ("synthetic_count", 1, MAX_SYNTHETIC_COUNT),
                                ("synthetic_size", 16, MAX_SYNTHETIC_SIZE), ("steps_per_epoch", 0, None),
                                ("patience_lr", 0, None), ("early_stop", 0, None), ("warmup_epochs", 0, None), ("log_every", 0, None),
                                ("seed", 0, None)):
            setattr(self, name, check_int(_flag(name), getattr(self, name), low=low, high=high))
        self.patch_size = check_int("--patch-size (0 for whole images)", self.patch_size, low=0,
                                    high=MAX_PATCH_SIZE, multiple=8)
        check_model_options(self.arch, self.base_channels, self.dropblock_rate, self.block_size, 3)
        self.lr = check_number("--lr", self.lr, low=0.0, low_open=True)
        self.min_lr = check_number("--min-lr", self.min_lr, low=0.0)
        if self.min_lr > self.lr:
            raise ConfigError(f"--min-lr {self.min_lr:g} is above --lr {self.lr:g}: the schedule only lowers "
                              f"the rate, so choose --min-lr at most --lr")
        self.lr_factor = check_number("--lr-factor", self.lr_factor, low=0.0, high=1.0, low_open=True,
                                      high_open=True)
        if self.schedule == "cosine":
            for name in ("patience_lr", "lr_factor"):
                if getattr(self, name) != getattr(TrainConfig, name):
                    raise ConfigError(f"{_flag(name)} sets the plateau schedule, not --schedule cosine: drop one "
                                      f"of them")
        if self.warmup_epochs and self.schedule != "cosine":
            raise ConfigError("--warmup-epochs applies to --schedule cosine: add --schedule cosine or drop it")
        if self.warmup_epochs >= self.epochs and self.schedule == "cosine":
            raise ConfigError(f"--warmup-epochs {self.warmup_epochs} leaves no epoch of the {self.epochs} "
                              f"for the cosine decay: choose fewer warm-up epochs")
        self.ema = check_number("--ema (a decay in [0, 1); 0 = off)", self.ema, low=0.0, high=1.0, high_open=True)
        self.val_fraction = check_number("--val-fraction", self.val_fraction, low=0.0, high=1.0, high_open=True)
        if self.val_count is not None:
            self.val_count = check_int("--val-count", self.val_count, low=0)
        self.bce_weight = check_number("--bce-weight", self.bce_weight, low=0.0)
        self.mcc_weight = check_number("--mcc-weight", self.mcc_weight, low=0.0)
        if self.bce_weight + self.mcc_weight == 0:
            raise ConfigError("--bce-weight and --mcc-weight are both 0: at least one must be positive")
        self.pos_weight = parse_pos_weight(self.pos_weight)
        self.rotate = check_number("--rotate (degrees)", self.rotate, low=0.0, high=180.0)
        for name in ("brightness", "contrast"):
            setattr(self, name, check_number(_flag(name), getattr(self, name), low=0.0, high=1.0, high_open=True))
        self.gamma = check_number("--gamma", self.gamma, low=0.0, high=MAX_GAMMA)
        if self.monitor is not None and self.monitor not in MONITORS:
            raise ConfigError(f"--monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        if self.time_limit is not None:
            self.time_limit = check_number("--time-limit (minutes)", self.time_limit, low=0.0, low_open=True)
        if self.dataset == "folder" and self.images is None and self.data_root is None:
            raise ConfigError("--dataset folder needs --images DIR (with --labels DIR) or --data-root DIR")
        if self.dataset in ("drive", "stare", "chase") and self.data_root is None:
            raise ConfigError(f"--dataset {self.dataset} needs --data-root (the folder holding the dataset)")

    # ------------------------------------------------------------- conversion
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Build from a dict, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def command_line(self, out: str) -> str:
        """The `numpyseg train` command that defines this run (options left at their
        defaults are omitted).  Parsing it back gives an equal config (tested)."""
        defaults = TrainConfig()
        parts = ["numpyseg", "train"]
        for f in fields(self):
            value, default = getattr(self, f.name), getattr(defaults, f.name)
            if value == default:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                # switches: --no-augment / --no-flip / --no-rot90 turn on-by-default ones off
                parts.append(flag if value else "--no-" + f.name.replace("_", "-"))
            elif value is not None:
                parts += [flag, _shell_word(value)]
        parts += ["--out", _shell_word(out)]
        return " ".join(parts)

    def model_config(self) -> dict:
        """The dict `numpyseg.models.build_model` takes (stored as the checkpoint's config)."""
        return {"arch": self.arch, "base_channels": int(self.base_channels),
                "dropblock_rate": float(self.dropblock_rate), "block_size": int(self.block_size),
                "in_channels": 3}


def _flag(name: str) -> str:
    """The command-line flag of a config field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def _shell_word(value) -> str:
    """A value as one shell word (quoted when it holds spaces or shell characters)."""
    import shlex

    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        text = repr(value)  # 130.0 stays a float, as argparse reads it back
    else:
        text = str(value)
    return shlex.quote(text)


def parse_pos_weight(value) -> float | str:
    """A positive finite number or the string 'balanced' (BCE's positive-class weight).

    Raises:
        ConfigError: anything else.
    """
    if isinstance(value, str):
        if value.strip().lower() == "balanced":
            return "balanced"
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"--pos-weight must be a positive number or 'balanced', got {value!r}") from None
    return check_number("--pos-weight (a number, or 'balanced')", value, low=0.0, low_open=True)


def merge_for_resume(saved: TrainConfig, given: dict) -> TrainConfig:
    """The saved run's config, with the session options the user gave on the command line.

    Args:
        saved: the config stored in the checkpoint being resumed.
        given: options the user set explicitly this time ({name: value}).

    Raises:
        ConfigError: an explicitly given option that defines the run differs from the
            saved one (start a new --out folder to change it).
    """
    merged = saved.to_dict()
    for key, value in given.items():
        if key in SESSION_KEYS:
            merged[key] = value
            continue
        if key == "pos_weight":
            value = parse_pos_weight(value)
        if merged.get(key) != value:
            flag = _flag(key)
            raise ConfigError(f"{flag} {value} differs from the run being resumed ({merged.get(key)}): "
                             f"drop {flag}, or start a new run in another --out folder")
    return TrainConfig.from_dict(merged)
