"""One typed config: YAML experiment files with inheritance and key=value overrides.

A config file may name a parent with `base: other.yaml` (relative to the file).
Mappings merge key by key; anything else in the child replaces the parent's
value. Command-line overrides (`train.lr=3e-4`) apply last. The merged mapping
is validated once into `Config`; unknown keys, wrong types and missing required
values are refused with a message that names the key.

The recipe (`seed`, `metric`, `model`, `train`) shapes the weights, and a resume
must match it (medal.modeling.checkpoint.recipe). `runtime`, `report` and
`lr_find` never change the weights, so they may change between a run and its
resume.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from medal.core import kaggle_env, names

# Closed sets of registry names as types: pydantic refuses any other value and lists the choices.
AugmentPreset = Literal[names.AUGMENT_PRESETS]
MetricName = Literal[names.METRICS]
FoldStrategy = Literal[names.FOLD_STRATEGIES]
BlendMethod = Literal[(*names.BLEND_METHODS, "compare")]
TtaReduction = Literal[names.TTA_REDUCTIONS]


# Body LR / head LR when fine-tuning a pretrained body: the usual tenth of the head's.
PRETRAINED_BODY_LR_SCALE = 0.1
# train.lr: auto, by optimizer and by whether the body starts trained, for AUTO_LR_BATCH images per step
# (the linear rule scales it to the real batch). From scratch a body needs more than fine-tuning: on flowers
# fold 0 (resnet18, 64 px, 8 epochs) AdamW 3e-3 scored 66.2 against 64.2 at 1e-3; a tie on digits (README).
# The pretrained row is the usual fine-tuning practice, not measured here (no pretrained weights offline).
AUTO_LR = {("adamw", "scratch"): 3e-3, ("adamw", "pretrained"): 1e-3,
           ("sgd", "scratch"): 0.1, ("sgd", "pretrained"): 0.01,
           ("rmsprop", "scratch"): 1e-3, ("rmsprop", "pretrained"): 1e-4}
AUTO_LR_BATCH = 64


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the key."""


class Section(BaseModel):
    # coerce_numbers_to_str: `name=2024` on the command line is YAML's int 2024, meant as a name.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class DataConfig(Section):
    root: Path = Field(description="Kaggle-style competition folder.")
    name: str | None = Field(None, description="Short name for outputs; defaults to the root folder's name.")
    train_csv: str = Field("train.csv", description="CSV of training rows, relative to root.")
    train_dir: str = Field("train", description="Folder of training images, relative to root.")
    test_dir: str = Field("test", description="Folder of test images, relative to root.")
    sample_submission: str = Field("sample_submission.csv", description="Submission template, relative to root; its ids are the test set.")
    id_col: str = Field("image_id", description="Column holding the image id.")
    label_col: str = Field("label", description="Column holding the class label.")
    image_ext: str = Field("", description="Suffix appended to an id to get its file name ('' when ids already carry it, e.g. '.png').")
    label_sep: str | None = Field(None, description="Multi-label rows: the labels in label_col are split by this separator (e.g. ' '); None: one label per row.")
    cache_max_side: int = Field(0, ge=0, description="Resized-image cache: when > 0, `medal clean` writes every kept training image and every test image with its longest side at most this many pixels (never upscaled) under <output_dir>/<competition>/cache/, once, and training and inference read those copies. 0: off, the originals are read.")
    cache_format: Literal["jpg", "png"] = Field("jpg", description="File format of the cached copies: jpg (quality 95, fastest to decode) or png (lossless).")

    @field_validator("root")
    @classmethod
    def _root_exists(cls, root: Path) -> Path:
        if not root.is_dir():
            raise ValueError(f"data folder {root} does not exist")
        return root

    @property
    def competition(self) -> str:
        return self.name or self.root.resolve().name


class CleanConfig(Section):
    # The action for each finding that leaves a readable image; findings that make a row unusable
    # (missing or unreadable file, no label, repeated id) are always dropped and cannot be listed here.
    # small_image is kept: a small photo that decodes is data (small_file, the sign of a cut-off file, drops).
    DEFAULT_POLICY: ClassVar[dict[str, str]] = {
        "unknown_label": "drop", "degenerate": "drop", "extreme_aspect": "drop", "small_file": "drop",
        "small_image": "keep", "blank": "drop", "duplicate_conflict": "drop", "near_duplicate_conflict": "keep",
        "duplicate_copy": "keep"}

    min_side: int = Field(2, ge=1, description="Images with a side shorter than this many pixels are flagged degenerate.")
    max_aspect: float = Field(10.0, ge=1.0, description="Images whose longer side is more than this many times the shorter are flagged extreme_aspect.")
    small_bytes_ratio: float = Field(0.05, ge=0, lt=1, description="Files smaller than this fraction of the median file size are flagged small_file (content often missing); 0: off.")
    small_pixels_ratio: float = Field(0.05, ge=0, lt=1, description="Images with fewer pixels than this fraction of the median pixel count are flagged small_image; 0: off.")
    blank_fraction: float = Field(0.9, gt=0, le=1, description="Images in which one exact colour covers at least this share of the pixels are flagged blank (empty image or 'image not found' placeholder).")
    near_duplicates: bool = Field(True, description="Also group near duplicates by perceptual hash (imagehash's phash), not only byte-identical files.")
    near_threshold: int = Field(6, ge=0, le=32, description="Largest Hamming distance (of 64 bits) between two perceptual hashes that counts as a near duplicate.")
    conflict_resolution: Literal["drop_all", "majority"] = Field("drop_all", description="Duplicates whose labels disagree: drop_all flags every copy; majority flags only the copies that disagree with a strict majority label (all copies when there is none).")
    classes: list[str] = Field([], description="The competition's label set; labels outside it are flagged unknown_label. Empty: no fixed set, but a label differing only by case or spaces from a more common one is still flagged.")
    policy: dict[str, Literal["drop", "keep"]] = Field(DEFAULT_POLICY, description="drop or keep, per finding; keys you give override these defaults (e.g. clean.policy.small_image=keep).")
    workers: int = Field(0, ge=0, description="Processes that scan the images; 0: one per CPU core this process may use.")

    @field_validator("policy")
    @classmethod
    def _complete_policy(cls, value: dict[str, str]) -> dict[str, str]:
        for reason in value:
            if reason not in cls.DEFAULT_POLICY:
                raise ValueError(f"{reason!r} has no policy; the reasons with one are {sorted(cls.DEFAULT_POLICY)} "
                                 "(missing, empty, unreadable, truncated and corrupt files, missing labels and repeated ids are always dropped)")
        return {**cls.DEFAULT_POLICY, **value}


class FoldsConfig(Section):
    strategy: FoldStrategy = Field("stratified", description="Fold strategy (medal.folds.run.STRATEGIES): stratified (by label), group (whole folds.group_col groups), stratified_group (both), multilabel (iterative stratification; needs data.label_sep), kfold (regression: stratified on quantile bins of a numeric label). Duplicate groups from clean are always kept whole.")
    n_folds: int = Field(5, ge=2, description="Number of folds (k).")
    seed: int = Field(42, description="Seed of the fold shuffle, recorded in folds.json.")
    group_col: str | None = Field(None, description="Column of train.csv whose rows must share a fold (e.g. patient_id); needed by the group and stratified_group strategies, honoured by every strategy when set.")
    n_bins: int = Field(10, ge=2, description="kfold (regression): the numeric target is cut into this many quantile bins for stratification.")
    repeats: int = Field(1, ge=1, description="Repeated CV: folds.csv gets `fold` (seed) plus fold_s1 .. fold_s<repeats-1> (seed + r), each a full split.")


class ModelConfig(Section):
    backbone: str = Field("resnet10t", description="Any timm model name.")
    pretrained: bool = Field(False, description="Start from timm's pretrained weights for the backbone, through timm's hub mechanism (the Hugging Face cache when offline, HF_HUB_OFFLINE=1).")
    pretrained_file: Path | None = Field(None, description="Local weights file for the backbone, e.g. DIR/model.safetensors written by `medal weights export` into a Kaggle dataset (no hub access); excludes model.pretrained. Neither: train from scratch.")
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the classifier head.")
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0, description="Stochastic depth rate in the body.")
    head_init: Literal["xavier", "kaiming", "timm"] = Field("xavier", description="Init of the new classifier head: xavier (Xavier-normal, suits a linear layer into softmax), kaiming (Kaiming-normal), timm (the backbone's own); biases start at 0. A pretrained head (weights with the same class count) is kept.")

    @field_validator("pretrained_file")
    @classmethod
    def _one_source_of_weights(cls, value: Path | None, info) -> Path | None:
        if value is not None and info.data.get("pretrained"):
            raise ValueError("model.pretrained and model.pretrained_file are exclusive (timm's hub weights, or a "
                             "local file): keep one")
        return value


class StageConfig(Section):
    image_size: int = Field(ge=8, description="Square input size of this stage.")
    epochs: int = Field(ge=1, description="Epochs of this stage.")
    batch_size: int = Field(ge=1, description="Images per batch in this stage.")


class RestartsConfig(Section):
    cycle_epochs: float = Field(2.0, gt=0, description="Length of the first cosine cycle in epochs (after warmup).")
    cycle_mul: float = Field(2.0, ge=1, description="Each cycle is this many times longer than the one before.")
    cycle_decay: float = Field(1.0, gt=0, le=1, description="Each restart's peak LR is this times the one before.")
    cycle_limit: int | None = Field(None, ge=1, description="Number of cycles; after the last the LR stays at min_lr. None: no limit.")


class MixupConfig(Section):
    mixup_alpha: float = Field(0.0, ge=0, description="Mixup Beta(alpha, alpha); 0 = off (timm Mixup).")
    cutmix_alpha: float = Field(0.0, ge=0, description="CutMix Beta(alpha, alpha); 0 = off.")
    prob: float = Field(1.0, ge=0, le=1, description="Probability that a batch is mixed at all.")
    switch_prob: float = Field(0.5, ge=0, le=1, description="With both on: probability of CutMix instead of Mixup.")

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


class EmaConfig(Section):
    enabled: bool = Field(True, description="Keep an exponential moving average of the weights (timm ModelEmaV3), validated every epoch.")
    decay: float = Field(0.999, gt=0, lt=1, description="EMA decay (the cap, when warmup is on).")
    warmup: bool = Field(True, description="Ramp the decay up from 0 (1 - (1 + step) ** -2/3), so short runs still average.")
    oof: Literal["either", "ema", "raw"] = Field("either", description="Which weights best.pt, early stopping and the OOF follow: ema, raw, or either (each epoch, whichever validates better).")


class HardMiningConfig(Section):
    start_epoch: int | None = Field(None, ge=1, description="From this epoch (0-based) on, draw training samples in proportion to their last loss. None: off.")
    strength: float = Field(1.0, ge=0, description="Weight = (loss / mean loss) ** strength; 0 draws uniformly.")
    cap: float = Field(5.0, ge=1, description="Weights are clipped to [1/cap, cap]: no sample is drawn more than cap times, or less than 1/cap times, as often as the mean.")


class AverageConfig(Section):
    swa_epochs: int = Field(0, ge=0, description="SWA (torch.optim.swa_utils): average the raw weights at the end of each of the last N epochs, then recompute the BatchNorm statistics on the training images; scored on the fold's validation next to best.pt. 0 = off.")
    top_k: int = Field(0, ge=0, description="Average the k epochs' weights that validated best (the weights best.pt would hold each epoch: raw or EMA), BatchNorm statistics recomputed; scored next to best.pt. 0 = off.")
    oof: Literal["best", "swa", "top_k"] = Field("best", description="Which weights write the OOF and become best.pt (what infer predicts with): best (the best epoch's), swa or top_k (the averages, when on).")

    @model_validator(mode="after")
    def _oof_weights_exist(self) -> AverageConfig:
        if self.oof == "swa" and not self.swa_epochs:
            raise ValueError("oof: swa needs swa_epochs > 0 (the SWA average is off)")
        if self.oof == "top_k" and not self.top_k:
            raise ValueError("oof: top_k needs top_k > 0 (the top-k average is off)")
        return self


class LrFindConfig(Section):
    start_lr: float = Field(1e-7, gt=0, description="lr-find: first LR of the exponential sweep.")
    end_lr: float = Field(10.0, gt=0, description="lr-find: last LR of the sweep.")
    steps: int = Field(100, ge=5, description="lr-find: optimizer steps in the sweep (at most).")
    smoothing: float = Field(0.98, ge=0, lt=1, description="lr-find: exponential smoothing of the loss (debiased).")
    diverge: float = Field(4.0, gt=1, description="lr-find: stop when the smoothed loss exceeds this times its minimum.")
    rule: Literal["valley", "steepest"] = Field("valley", description="lr-find: suggest the LR in the longest valley (fastai) or at the steepest descent.")


class TrainConfig(Section):
    image_size: int = Field(224, ge=8, description="Square input size in pixels (the last stage's size when train.stages is set; OOF and inference use it).")
    epochs: int = Field(10, ge=1, description="Epochs per fold (train.stages replaces it when set).")
    batch_size: int = Field(32, ge=1, description="Images per batch (train.stages replaces it when set).")
    stages: list[StageConfig] = Field([], description="Progressive resizing: [{image_size, epochs, batch_size}, ...]; the same model and one schedule run through them.")
    lr: float | Literal["auto"] = Field("auto", description="Peak learning rate of the head (the body's is scaled by body_lr_scale or layer_decay). auto: by optimizer, from scratch or pretrained (medal.core.config.AUTO_LR: AdamW 3e-3 from scratch, 1e-3 fine-tuning) for 64 images per step, with the linear rule on (lr_reference_batch 64 unless set).")
    optimizer: Literal["adamw", "sgd", "rmsprop"] = Field("adamw", description="timm create_optimizer_v2 name: adamw, sgd (Nesterov momentum), rmsprop.")
    momentum: float = Field(0.9, ge=0, lt=1, description="Momentum of sgd and rmsprop.")
    weight_decay: float = Field(0.01, ge=0, description="Weight decay (L2; decoupled for AdamW); biases and norms are exempt.")
    l1_head: float = Field(0.0, ge=0, description="L1 penalty on the classifier head's weights, added to the loss.")
    body_lr_scale: float = Field(1.0, gt=0, le=1, description="Body LR = lr x this; the head keeps lr. Unset, it is 0.1 for a pretrained body (model.pretrained or model.pretrained_file) without layer_decay, else 1.0.")
    layer_decay: float | None = Field(None, gt=0, le=1, description="Layer-wise LR decay (timm): each layer's LR is this times the next one's, up to the head.")
    freeze_body_epochs: int = Field(0, ge=0, description="Train only the head for this many first epochs (body weights and norm statistics frozen).")
    lr_reference_batch: int | None = Field(None, ge=1, description="Linear scaling rule: LR x (batch_size x accumulate / this). None: no scaling (with lr auto: 64, the batch the auto LR is for).")
    accumulate: int = Field(1, ge=1, description="Batches per optimizer step (gradient accumulation).")
    clip_grad_norm: float | None = Field(None, gt=0, description="Clip the gradient norm to this before each step. None: off.")
    schedule: Literal["cosine", "restarts", "onecycle"] = Field("cosine", description="LR schedule per step: cosine (timm), restarts (timm cosine with warm restarts, see train.restarts), onecycle (torch OneCycleLR).")
    restarts: RestartsConfig = RestartsConfig()
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warmup in epochs before the cosine (onecycle: its rise; 0 takes 30% of the run).")
    min_lr: float = Field(1e-6, ge=0, description="Learning rate at the end of the cosine.")
    loss: Literal["ce", "bce", "mse"] = Field("ce", description="ce: cross-entropy (single-label), bce: per-class binary (multi-label), mse: regression on the target vector.")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the targets (every loss, with or without mixup).")
    mixup: MixupConfig = MixupConfig()
    ema: EmaConfig = EmaConfig()
    patience: int | None = Field(None, ge=1, description="Early stopping: stop after this many epochs without a better validation metric. None: off.")
    hard_mining: HardMiningConfig = HardMiningConfig()
    average: AverageConfig = AverageConfig()
    augment: AugmentPreset = Field("light", description="Augmentation preset: none, light (no flips), flips, photo (medal.images.augment.PRESETS).")
    pseudo_labels: Path | None = Field(None, description="A pseudo-label table (`medal pseudo` writes <output_dir>/<competition>/pseudo_<name>/pseudo.csv): its test images join the training side of every fold, never validation. Hard labels (id, label) train like real rows; a table with one probability column per class (--soft) trains on those probabilities. Its content hash is part of the recipe: a changed table makes the trained folds stale.")

    @field_validator("stages")
    @classmethod
    def _stages_end_at_image_size(cls, value: list[StageConfig], info) -> list[StageConfig]:
        size = info.data.get("image_size")
        if value and size is not None and value[-1].image_size != size:
            raise ValueError(f"the last stage's image_size ({value[-1].image_size}) must equal train.image_size ({size}), "
                             "the size the OOF and inference use")
        return value

    @field_validator("mixup")
    @classmethod
    def _mixup_needs_even_batches(cls, value: MixupConfig, info) -> MixupConfig:
        sizes = [s.batch_size for s in info.data.get("stages") or []] or [info.data.get("batch_size")]
        if value.enabled and any(b is not None and b % 2 for b in sizes):
            raise ValueError(f"mixup/cutmix pair each image with another: batch sizes must be even (got {sizes})")
        return value

    def stage_list(self) -> list[StageConfig]:
        """The progressive stages, or one stage of (image_size, epochs, batch_size)."""
        return self.stages or [StageConfig(image_size=self.image_size, epochs=self.epochs, batch_size=self.batch_size)]

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stage_list())


class RuntimeConfig(Section):
    """Where and how fast a run goes, never what it computes: any of these may change between a run and its resume."""
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes; 0 loads in the main process.")
    persistent_workers: bool = Field(True, description="Keep DataLoader workers alive between epochs (augmentations stay reproducible: seeds travel with the batches).")
    cpu_threads: int | None = Field(None, ge=1, description="torch compute threads when training on CPU; None: torch's own setting (OMP_NUM_THREADS, else the cores).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' takes CUDA when present.")
    amp: bool = Field(True, description="Mixed precision on CUDA (runtime.amp_dtype); ignored on CPU.")
    sync_bn: bool = Field(False, description="Under torchrun (several processes per fold): SyncBatchNorm, batch statistics over every rank's batch; helps when each rank's batch is small.")
    amp_dtype: Literal["auto", "bf16", "fp16"] = Field("auto", description="auto: bf16 where the GPU has it (Ampere and newer), else fp16 with a gradient scaler (the T4 and P100 of Kaggle kernels); or bf16 / fp16 by name.")
    channels_last: bool = Field(True, description="channels_last memory format for model and batches on CUDA (faster convolutions with AMP).")
    compile: bool = Field(False, description="torch.compile the model on CUDA (slow first epoch, faster after).")


class ReportConfig(Section):
    """What a run shows about itself (grids, galleries, the diagnosis threshold, progress lines); never part of
    the recipe."""
    sample_grid: int = Field(16, ge=0, description="Save this many augmented training images per image size as fold<k>/augment_<size>px.png; 0 = off.")
    gallery_size: int = Field(16, ge=0, description="Save the fold's hardest OOF images (highest loss) as fold<k>/hardest_oof.png; 0 = off.")
    overfit_ratio: float = Field(10.0, gt=1, description="Fold diagnosis: overfitting when the validation loss is at least this many times the train loss (10: an order of magnitude).")
    progress_steps: int = Field(50, ge=1, description="When stderr is not a terminal (a pipe, a log file), each loop logs a progress line (step, img/s, loss, lr, ETA) every this many steps (batches; in clean, chunks of images), or every progress_seconds, whichever comes first, and at its last step. In a terminal a progress bar shows instead.")
    progress_seconds: float = Field(30.0, gt=0, description="When stderr is not a terminal: a loop logs a progress line at least this often, in seconds, even between progress_steps.")


class InferConfig(Section):
    tta: list[str] = Field(["identity", "hflip"], min_length=1, description="Candidate TTA views: identity, hflip, vflip, transpose, rot90, rot180, rot270, antitranspose, d4 (all eight), scale_<f> (model at image_size*f, e.g. scale_0.875), aug<k> (seeded random train-time augmentation, e.g. aug0) (medal.modeling.views).")
    tta_select: Literal["greedy", "fixed"] = Field("greedy", description="'greedy' keeps a view only if it raises the OOF metric; 'fixed' uses every view listed.")
    tta_reduce: TtaReduction = Field("mean", description="How the chosen views combine: mean, geometric mean or max (medal.infer.reduce.REDUCTIONS).")
    tta_space: Literal["probs", "logits"] = Field("probs", description="Reduce over probabilities, or over logits with a softmax after (gmean needs probs).")
    tta_augment: AugmentPreset | None = Field(None, description="Augmentation preset of the aug<k> views; none uses train.augment (medal.images.augment.PRESETS).")
    fold_average: Literal["mean", "rank"] = Field("mean", description="Average of the fold models' test predictions: mean probabilities, or mean per-class rank in [0, 1] (for ranking metrics such as roc_auc).")
    batch_size: int = Field(64, ge=1, description="Images per inference batch.")

    @field_validator("tta")
    @classmethod
    def _known_views(cls, value: list[str]) -> list[str]:
        names.expand_views(value)  # raises naming the unknown view
        return value

    @field_validator("tta_space")
    @classmethod
    def _gmean_needs_probs(cls, value: str, info) -> str:
        if value == "logits" and info.data.get("tta_reduce") == "gmean":
            raise ValueError("tta_reduce=gmean over logits is the mean over logits; use tta_space=probs or tta_reduce=mean")
        return value


class BlendConfig(Section):
    experiments: list[str] = Field([], description="Experiment names to blend (outputs/<competition>/<name>).")
    method: BlendMethod = Field("compare", description="How the models combine: mean, rank, greedy, caruana, optimize (medal.blend.methods.METHODS), or compare: score every method by nested CV and use the best (the default: a plain mean of a strong and a weak model can lose to the strong one alone, which greedy finds).")
    submission_name: str = Field("submission", description="Writes <submission_dir>/<submission_name>.csv.")
    submission_dir: Path = Field(Path("submissions"), description="Folder for blended submission files.")
    greedy_max_corr: float = Field(0.97, ge=-1.0, le=1.0, description="greedy: skip a candidate whose OOF Pearson correlation with any chosen model is above this.")
    caruana_iters: int = Field(100, ge=1, description="caruana: hill-climbing steps (one model added per step, with replacement).")
    caruana_init: int = Field(1, ge=1, description="caruana: start from the best N single models.")
    caruana_bags: int = Field(1, ge=1, description="caruana: bags of the model pool (1 = no bagging); weights are the mean over bags.")
    caruana_bag_fraction: float = Field(0.5, gt=0.0, le=1.0, description="caruana: fraction of models drawn into each bag.")
    optimize_on: Literal["log_loss", "metric"] = Field("log_loss", description="optimize: minimise OOF log loss (smooth, SLSQP), or the metric itself (Nelder-Mead over softmax weights).")


class TrackingConfig(Section):
    """Experiment tracking (Weights & Biases); never part of the recipe."""
    wandb: bool = Field(False, description="Log every fold and blend to Weights & Biases (one run per fold, grouped by experiment; run files under <output_dir>/<competition>/wandb).")
    project: str | None = Field(None, description="W&B project; none: medal-<competition>.")
    entity: str | None = Field(None, description="W&B entity (user or team); none: the key's default.")
    mode: Literal["auto", "online", "offline", "disabled"] = Field("auto", description="auto: WANDB_MODE when set, else online when an API key is present (WANDB_API_KEY, a Kaggle secret of that name, or `wandb login`), else offline with a warning. online without a key also goes offline, with a warning; disabled: no run at all.")
    tags: list[str] = Field([], description="Tags on every run.")
    init_timeout: float = Field(30.0, gt=0, description="Seconds wandb.init may take before medal goes offline and says so.")


class Config(Section):
    name: str = Field(description="Experiment name; outputs go to <output_dir>/<competition>/<name>.")
    seed: int = Field(42, description="Seed for training and augmentation.")
    metric: MetricName = Field("accuracy", description="Competition metric for CV, checkpoints, TTA and blend: accuracy, f1_macro, f1_micro, log_loss, roc_auc, qwk (medal.core.metrics.METRICS).")
    output_dir: Path = Field(Path("outputs"), description="Root of every stage's output.")
    data: DataConfig
    clean: CleanConfig = CleanConfig()
    folds: FoldsConfig = FoldsConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    lr_find: LrFindConfig = LrFindConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    report: ReportConfig = ReportConfig()
    infer: InferConfig = InferConfig()
    blend: BlendConfig = BlendConfig()
    tracking: TrackingConfig = TrackingConfig()
    # The file and overrides it was loaded from, so a message can name the exact command to run.
    _source: tuple[str | None, tuple[str, ...]] = PrivateAttr((None, ()))

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        if not value or "/" in value or value in {".", ".."}:
            raise ValueError("must be a plain folder name")
        return value

    @model_validator(mode="after")
    def _pretrained_body_learns_slower(self) -> Config:
        """Fine-tuning keeps what a pretrained body learned: an unset train.body_lr_scale becomes 0.1 for one (unless
        layer_decay lowers the body's LR already). Filled in here, so the recipe a resume must match records it."""
        t, m = self.train, self.model
        if "body_lr_scale" not in t.model_fields_set and t.layer_decay is None and (m.pretrained or m.pretrained_file):
            t.body_lr_scale = PRETRAINED_BODY_LR_SCALE
        return self

    @model_validator(mode="after")
    def _auto_lr_follows_the_situation(self) -> Config:
        """lr auto becomes a number here, so the recipe a resume or a check compares records the LR used."""
        t = self.train
        if t.lr == "auto":
            start = "pretrained" if self.model.pretrained or self.model.pretrained_file else "scratch"
            t.lr = AUTO_LR[(t.optimizer, start)]
            if t.lr_reference_batch is None:
                t.lr_reference_batch = AUTO_LR_BATCH
        elif t.lr <= 0:
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError("positive_lr", "must be a number above 0, or auto"), loc=("train", "lr"), input=t.lr)])
        return self

    @model_validator(mode="after")
    def _ranks_only_for_metrics_that_read_them(self) -> Config:
        """Rank settings write per-class ranks, not probabilities: refused up front for a metric that reads
        probabilities, which would score the ranks as if they were (and a submission would hold them)."""
        if "rank" not in (self.blend.method, self.infer.fold_average):
            return self
        # Imported here: metrics loads scikit-learn, which a config without rank settings never needs.
        from medal.core.metrics import SCORE_METRICS, reads_scores

        if reads_scores(self.metric):
            return self
        unread = f"which metric {self.metric!r} does not read (only {', '.join(SCORE_METRICS)} reads ranks)"
        problems = []
        if self.blend.method == "rank":
            problems.append((("blend", "method"),
                             f"rank blends per-class ranks, {unread}; use mean, greedy, caruana or optimize, or compare"))
        if self.infer.fold_average == "rank":
            problems.append((("infer", "fold_average"),
                             f"rank averages the fold models' per-class ranks, {unread}; use mean"))
        # A ValidationError with the key's location, so the message names blend.method rather than the whole config.
        raise ValidationError.from_exception_data(type(self).__name__, [
            InitErrorDetails(type=PydanticCustomError("rank_metric", message), loc=loc, input="rank")
            for loc, message in problems])

    @property
    def data_dir(self) -> Path:
        """Outputs shared by every experiment of one competition (clean, folds)."""
        return self.output_dir / self.data.competition

    @property
    def exp_dir(self) -> Path:
        return self.data_dir / self.name

    def fold_dir(self, fold: int) -> Path:
        return self.exp_dir / f"fold{fold}"

    @property
    def source(self) -> tuple[str | None, tuple[str, ...]]:
        """(config file, key=value overrides) this config was loaded from; (None, ()) when built in code."""
        return self._source


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read `path` (following `base:` links), apply `key=value` overrides, validate."""
    path = Path(path)
    raw = _read_with_bases(path, seen=())
    for item in overrides or []:
        _apply_override(raw, item)
    if kaggle_env.in_kernel():
        # A config packed for a kernel names the local data folder and output folders (medal.kaggle).
        try:
            raw = kaggle_env.kernel_paths(raw, DataConfig.model_fields["sample_submission"].default,
                                          {"output_dir": "outputs", "blend.submission_dir": "submissions"})
        except kaggle_env.KaggleEnvError as err:
            raise ConfigError(f"config {path}: {err}") from None
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, path)) from None
    cfg._source = (str(path), tuple(overrides or ()))
    return cfg


def derive(cfg: Config, overrides: list[str]) -> Config:
    """A new config: `cfg` as resolved (auto values filled in) with `key=value` overrides applied and validated.
    Its source is cfg's file with cfg's overrides and these after them, so messages name a command that works."""
    raw = cfg.model_dump(mode="json")
    for item in overrides:
        _apply_override(raw, item)
    try:
        derived = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, Path(cfg.source[0] or "<config>"))) from None
    file, earlier = cfg.source
    derived._source = (file, (*earlier, *overrides))
    return derived


def _read_with_bases(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"config {path} inherits from itself through 'base'")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of keys, not {type(raw).__name__}")
    # Only `base` is relative to the file; data paths are relative to the
    # working directory, like every other path a stage reads or writes.
    base = raw.pop("base", None)
    if base is None:
        return raw
    parent = _read_with_bases(path.parent / base, seen + (path.resolve(),))
    return _merge(parent, raw)


def _merge(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like key=value, e.g. train.lr=3e-4")
    value = yaml.safe_load(text) if text else None
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = value


# Config keys that name a registry entry (medal.core.names), as pydantic locates them.
REGISTRY_KEYS = {("metric",), ("folds", "strategy"), ("train", "augment"), ("infer", "tta_augment"), ("blend", "method")}

# Keys that moved to another section, so an old config gets told where they live now.
MOVED = {**{f"train.{k}": f"runtime.{k}" for k in RuntimeConfig.model_fields},
         **{f"train.{k}": f"report.{k}" for k in ReportConfig.model_fields}, "train.lr_find": "lr_find"}


def _describe(err: ValidationError, path: Path) -> str:
    lines = [f"invalid config {path}:"]
    for problem in err.errors():
        key = ".".join(str(p) for p in problem["loc"])
        if problem["type"] == "extra_forbidden" and key in MOVED:
            lines.append(f"  {key}: moved to {MOVED[key]}")
        elif problem["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{_suggest(problem['loc'])}")
        elif problem["type"] == "literal_error" and problem["loc"][:2] in REGISTRY_KEYS:
            key = ".".join(str(p) for p in problem["loc"][:2])  # without the union member pydantic appends
            lines.append(f"  {key}: {problem.get('input')!r} is not one of {problem['ctx']['expected']}")
        elif problem["type"] == "missing":
            lines.append(f"  {key}: required value is missing")
        else:
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"  {key}: {message} (got {problem.get('input')!r})")
    return "\n".join(lines)


def _suggest(loc: tuple) -> str:
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """One help line per config key: dotted name, default and description."""
    lines = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.extend(describe_keys(annotation, f"{prefix}{name}."))
            continue
        shown = str(field.default) if isinstance(field.default, Path) else repr(field.default)
        default = "required" if field.is_required() else f"default {shown}"
        lines.append(f"  {prefix}{name} ({default}): {field.description or ''}")
    return lines


def config_snapshot(cfg: Config) -> str:
    """The resolved config as YAML, for saving beside every output."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
