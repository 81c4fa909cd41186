"""Every configuration dataclass and the presets, in one torch-free module.

One dataclass per concern (model, regularization, training, data), each default with a short
comment that is also its ``--help`` text. The CLI, the presets, the notebooks and the tests all
build these same dataclasses; ``RunConfig`` is saved as JSON with every run and read back with
unknown keys refused. Importing this module loads no torch, so ``python -m src --help`` is fast.
"""
from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .utils import UserError

MODEL_NAMES = ("ae", "vae")


@dataclass
class ModelConfig:
    name: str = "ae"            # "ae" (ConvAE) or "vae" (LinearVAE)
    image_size: int = 128       # input height = width, pixels
    channels: int = 1           # 1 = grayscale
    ae_hidden: int = 8          # ConvAE channels after the first conv
    ae_latent: int = 4          # ConvAE bottleneck channels (latent is ae_latent x S/4 x S/4)
    vae_hidden: int = 512       # LinearVAE hidden units
    vae_latent: int = 200       # LinearVAE latent dimensions

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise UserError(f"unknown model {self.name!r}; choose one of {list(MODEL_NAMES)}")
        if self.image_size % 4 or self.image_size < 8:
            raise UserError(f"image_size must be a multiple of 4 and >= 8, got {self.image_size}")
        for name in ("channels", "ae_hidden", "ae_latent", "vae_hidden", "vae_latent"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")


KINDS = ("none", "l1", "l2", "l1+l2")
SCOPES = ("all", "encoder", "decoder")


@dataclass
class RegConfig:
    kind: str = "none"          # none | l1 | l2 | l1+l2 (elastic net)
    l1: float = 1e-5            # lambda_1, used by l1 and l1+l2
    l2: float = 1e-5            # lambda_2, used by l2 and l1+l2
    include_bias: bool = False  # also penalize biases
    scope: str = "all"          # all | encoder | decoder: which part of the model is penalized

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"unknown regularizer {self.kind!r}; choose one of {list(KINDS)}")
        if self.scope not in SCOPES:
            raise UserError(f"unknown regularization scope {self.scope!r}; choose one of {list(SCOPES)}")
        if self.l1 < 0 or self.l2 < 0:
            raise UserError(f"regularization strengths must be >= 0, got l1={self.l1}, l2={self.l2}")

    @property
    def lambdas(self) -> tuple[float, float]:
        """(lambda_1, lambda_2) actually applied for this kind."""
        return (self.l1 if "l1" in self.kind else 0.0, self.l2 if "l2" in self.kind else 0.0)


@dataclass
class TrainConfig:
    epochs: int = 200           # full protocol of the original study
    batch_size: int = 128       # images per optimizer step
    lr: float = 1e-3            # Adam learning rate
    noise_train: float = 0.0    # sigma of Gaussian noise on training inputs (0 = clean; targets stay clean)
    beta: float = 1.0           # VAE: weight of the KL term
    vae_recon: str = "bce"      # VAE: reconstruction term, "bce" or "mse" (summed per image)
    seed: int = 0               # seeds init, shuffling, noise and VAE sampling
    device: str = "auto"        # auto = cuda, else mps, else cpu
    progress: bool = True       # progress bars where watched (a terminal, a notebook); never into a log file
    amp: bool = False           # bf16 autocast of the training forward pass (evaluation stays float32)
    channels_last: bool | None = None  # NHWC layout of model and inputs; None = the ConvAE on a CPU (faster there)
    compile: bool = False       # torch.compile the model (the first epoch pays the compile time)
    checkpoint_s: float = 60.0  # min. seconds between last.pt/best.pt writes (kept <= 5% of the time); 0 = every epoch
    fused_adam: bool = True     # Adam's update as one fused kernel per tensor (CPU, CUDA); False = torch's op-by-op loop
    keep_last: bool = False     # keep last.pt once the run is evaluated (it only serves to train the run further)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UserError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UserError(f"lr (learning rate) must be > 0, got {self.lr}")
        if self.noise_train < 0:
            raise UserError(f"noise_train (input noise sigma) must be >= 0, got {self.noise_train}")
        if not self.checkpoint_s >= 0:
            raise UserError(f"checkpoint_s must be >= 0 seconds, got {self.checkpoint_s}")
        if self.beta < 0:
            raise UserError(f"beta must be >= 0, got {self.beta}")
        if self.vae_recon not in ("bce", "mse"):
            raise UserError(f"vae_recon must be 'bce' or 'mse', got {self.vae_recon!r}")


def check_fractions(fractions) -> tuple[float, float, float]:
    """(train, val, test) fractions as floats, or a one-line error."""
    try:
        fr = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise UserError(f"split must be three numbers (train, val, test), got {fractions!r}") from None
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise UserError(f"split must be three fractions >= 0 summing to 1 (train, val, test), got {fractions!r}")
    return fr


@dataclass
class DataConfig:
    root: str | None = None  # image folder; None = real dataset if present, else the generated sample
    image_size: int = 128  # images are resized to image_size x image_size
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train/val/test fractions
    split_seed: int = 0  # seed of the split permutation
    limit: int | None = None  # use only the first `limit` images (sorted order); None = all
    sample_size: int = 2000  # images generated when the sample is created
    strict: bool = False  # bad files are an error instead of a reported skip
    cache_dir: str | None = None  # None = data/.cache
    n_images: int | None = None  # set once resolved (``resolved``): images used; checked by every later load
    files_sha256: str | None = None  # set once resolved: digest of the sorted file list; checked likewise

    def __post_init__(self):
        self.split = check_fractions(self.split)  # a JSON round trip gives a list
        for name, low in (("image_size", 8), ("limit", 1), ("sample_size", 3), ("split_seed", 0)):
            v = getattr(self, name)
            if v is None and name == "limit":
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise UserError(f"data.{name} must be an integer >= {low}, got {v!r}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Inverse of ``to_dict``; unknown sections or keys are errors."""
        parts = {f.name: f.type for f in fields(cls)}
        unknown = set(d) - set(parts)
        if unknown:
            raise UserError(f"unknown config section(s): {sorted(unknown)}")
        types = {"model": ModelConfig, "reg": RegConfig, "train": TrainConfig, "data": DataConfig}
        return cls(**{k: _dataclass_from(types[k], d.get(k, {})) for k in parts})


def _dataclass_from(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise UserError(f"unknown {cls.__name__} key(s): {sorted(unknown)}")
    d = dict(d)
    if cls is DataConfig and isinstance(d.get("split"), list):
        d["split"] = tuple(d["split"])  # JSON has no tuples
    return cls(**d)


def config_key(cfg: Any, ignore: Collection[tuple[str, str]] = ()) -> str:
    """A configuration (a dataclass of sections, or a dict of them) as one canonical JSON string without
    the ``(section, field)`` pairs in ``ignore``: two configurations with equal keys are equal apart
    from those fields. The one comparison of resuming, stacking, sweep reuse and grid identity."""
    d = cfg if isinstance(cfg, dict) else asdict(cfg)
    return json.dumps({s: {k: v for k, v in sec.items() if (s, k) not in ignore} if isinstance(sec, dict) else sec
                       for s, sec in d.items()}, sort_keys=True, default=str)


# Settings that may differ between an interrupted run and its resumption.
RESUMABLE = {("train", "epochs"), ("train", "device"), ("train", "progress"), ("train", "channels_last"),
              ("train", "compile"), ("train", "checkpoint_s"), ("train", "fused_adam"),  # speed, not the objective
              ("train", "keep_last")}  # disk use



@dataclass(frozen=True)
class Preset:
    """A named size of the study: the training and data settings of every grid run, and its seeds."""
    name: str
    description: str
    train: TrainConfig          # epochs, batch size, ... of every run (noise_train and seed set per run)
    data: DataConfig            # image size, images used, sample size
    seeds: tuple[int, ...]      # one run per seed and grid cell
    noise_sigma: float = 0.1    # sigma of the noise-trained cells and of the noisy evaluation

    # short names used all over the report and the CLI
    epochs = property(lambda self: self.train.epochs)
    batch_size = property(lambda self: self.train.batch_size)
    image_size = property(lambda self: self.data.image_size)
    limit = property(lambda self: self.data.limit)
    sample_size = property(lambda self: self.data.sample_size)

    def summary(self) -> dict[str, Any]:
        """The flat description stored in ``grid.json`` (what the report reads)."""
        return {"name": self.name, "description": self.description, "epochs": self.epochs,
                "batch_size": self.batch_size, "image_size": self.image_size, "limit": self.limit,
                "sample_size": self.sample_size, "seeds": list(self.seeds), "noise_sigma": self.noise_sigma}


def preset(name: str, description: str, *, epochs: int, batch_size: int, image_size: int, limit: int | None,
           sample_size: int, seeds: tuple[int, ...], noise_sigma: float = 0.1) -> Preset:
    """A ``Preset`` from the handful of settings that differ between presets."""
    return Preset(name, description, TrainConfig(epochs=epochs, batch_size=batch_size),
                  DataConfig(image_size=image_size, limit=limit, sample_size=sample_size), seeds, noise_sigma)


PRESETS = {
    "smoke": preset("smoke", "seconds; for tests and CI: 48 images at 32x32, 2 epochs",
                    epochs=2, batch_size=16, image_size=32, limit=48, sample_size=2000, seeds=(0,)),
    "quick": preset("quick", "the default preview: 2,000 faces (the generated sample unless data/flickr exists) "
                    "at 128x128, 20 epochs on a CPU; not converged",
                    epochs=20, batch_size=128, image_size=128, limit=2000, sample_size=2000, seeds=(0,)),
    "full": preset("full", "the original protocol: whole dataset, 200 epochs, batch 128; for a GPU",
                   epochs=200, batch_size=128, image_size=128, limit=None, sample_size=70000, seeds=(0, 1, 2)),
    # The analysis presets add noise sweeps and parameter sweeps (src/sweeps.py) to the grid.
    "analysis": preset("analysis", "parameter-analysis preview on a CPU: 1,000 faces at 64x64, 12 epochs, "
                       "batch 64, 3 seeds; sweeps with 1 seed; not converged",
                       epochs=12, batch_size=64, image_size=64, limit=1000, sample_size=2000, seeds=(0, 1, 2)),
    "analysis-full": preset("analysis-full", "parameter analysis on the full protocol (whole dataset, 128x128, "
                            "200 epochs, 3 seeds for grid and sweeps); for a GPU",
                            epochs=200, batch_size=128, image_size=128, limit=None, sample_size=70000,
                            seeds=(0, 1, 2)),
}
ANALYSIS_PRESETS = ("analysis", "analysis-full")  # grids with noise sweeps, parameter sweeps and claims
PROTOCOL_PRESETS = ("full", "analysis-full")  # the original protocol; every other preset is a preview


def analysis_mode(preset_name: str | None) -> bool:
    """True for the analysis presets: their grid adds the sweeps and claims and skips rate-distortion."""
    return preset_name in ANALYSIS_PRESETS


# ---------------------------------------------------------------- rate-distortion (src/rd.py)

LATENT_CODERS = ("packed", "zlib", "lzma")  # lossless coders of quantized latents (src/compression.py)

@dataclass(frozen=True)
class RDConfig:
    bits: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12, 16)            # latent bits per value (AE, VAE, PCA)
    pca_k: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 200, 400, 800)   # PCA components (capped by the train size)
    jpeg: tuple[int, ...] = (1, 5, 10, 20, 30, 50, 70, 90)            # JPEG quality
    webp: tuple[int, ...] = (0, 5, 10, 20, 40, 60, 80, 95)            # WebP quality
    jpeg2000: tuple[float, ...] = (160, 100, 64, 40, 25, 16, 10, 6, 4)  # JPEG 2000 compression ratio
    coder: str = "auto"                     # latent coder: one of LATENT_CODERS or auto (the shortest)
    ae_latents: tuple[int, ...] = ()        # extra AE bottleneck channel counts (trained on first use)
    vae_latents: tuple[int, ...] = ()       # extra VAE latent sizes (trained on first use)
    max_images: int | None = None           # test images used (first N of the test split; None = all)


RD_PRESETS = {
    "smoke": RDConfig(bits=(4, 8), pca_k=(4, 8), jpeg=(20, 80), webp=(20, 80), jpeg2000=(16, 4)),
    "quick": RDConfig(vae_latents=(32,), ae_latents=(1,)),
    "full": RDConfig(vae_latents=(16, 32, 64, 128, 512), ae_latents=(1, 2, 8), max_images=2000),
    "gpu": RDConfig(max_images=2000),  # full's sweep without the extra trainings (benchmarks/gpu_piece.sh rd)
}


SECTIONS = {"model": ModelConfig, "reg": RegConfig, "train": TrainConfig, "data": DataConfig}


def set_fields(cfg: Any, assignments: list[str]) -> Any:
    """``cfg`` (a RunConfig or Preset) with ``SECTION.FIELD=VALUE`` assignments applied, e.g.
    ``train.lr=3e-4``; values are parsed as the field's current type. Unknown names are errors."""
    for a in assignments:
        key, sep, raw = a.partition("=")
        section, _, name = key.partition(".")
        cls = SECTIONS.get(section) if hasattr(cfg, section) else None
        if not sep or cls is None or name not in {f.name for f in fields(cls)}:
            have = [s for s in SECTIONS if hasattr(cfg, s)]
            raise UserError(f"--set {a!r}: expected SECTION.FIELD=VALUE with SECTION in {have} and FIELD one of "
                            "its fields (the flags of: python -m src train --help)")
        sub, typ = getattr(cfg, section), next(f.type for f in fields(cls) if f.name == name)
        current = getattr(sub, name)
        if current is None and raw.lower() != "none":  # an optional field: parse as its declared type
            current = {"bool": False, "int": 0, "float": 0.0}.get(str(typ).split("|")[0].strip(), current)
        cfg = replace(cfg, **{section: replace(sub, **{name: parse_value(raw, current, key)})})
    return cfg


def parse_value(raw: str, current: Any, name: str) -> Any:
    """``raw`` as the type of ``current`` (bool, int, float, str, a tuple of floats, or None)."""
    try:
        if isinstance(current, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if raw.lower() == "none":
            return None
        if isinstance(current, tuple):
            return tuple(float(v) for v in raw.split(","))
        if isinstance(current, (int, float)):
            return type(current)(float(raw)) if isinstance(current, int) and float(raw).is_integer() else type(current)(raw)
        return raw
    except ValueError:
        raise UserError(f"{name}: cannot read {raw!r} as {type(current).__name__}") from None
