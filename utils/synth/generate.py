"""One synthetic picture with its annotations; the same (seed, index) always gives the same bytes.

Three independent random streams per index: labels, waveform, and style (page, artefacts). The style stream
never sees the labels, so no artefact can carry a label.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from utils.core.labels import LABELS
from utils.core.versions import SYNTH_VERSION
from utils.synth.crumple import crumple_page
from utils.synth.labels import sample_labels
from utils.synth.photo import Picture, make_photo, page_outline
from utils.synth.render import PAGE_MM, draw_page_style, render_page, stroke_px
from utils.synth.report import REPORT_PARTS, report_style
from utils.synth.scan import make_scan
from utils.synth.traces import Traces, placed
from utils.synth.waveform import LEADS, simulate

STYLES = ("photo", "scan")
ARTEFACT_CONTROLS = ("perspective", "shadow", "blur")


# Strengths drawn for the crumpled pictures of the training mix: light to heavy (the sweeps go to 3).
CRUMPLE_DRAWN = (0.3, 2.5)


@dataclass(frozen=True)
class SynthSettings:
    style: str = "photo"          # photo or scan
    seed: int = 42
    page_width: int = 2200
    page_height: int = 1700
    photo_max_side: int = 3460
    severity: float = 1.0
    jpeg_quality: int = 0         # 0: drawn per image
    # one artefact of photos set apart from `severity` (None: follows it): the robustness curves sweep these
    perspective: float | None = None  # rotation, keystone, corner jitter and paper curl
    shadow: float | None = None       # light gradient, vignette and shadow darkness
    blur: float | None = None         # defocus and motion blur
    crumple: float = 0.0              # crumpled paper: facet shading and creases (0: a flat sheet; 3: heavy)
    creases: int | None = None        # long crease lines (None: 0-3 drawn per page when crumple > 0)
    crumple_rate: float = 0.0         # with crumple 0: this share of pictures crumpled, strength drawn in CRUMPLE_DRAWN
    report_share: float = 0.0         # this share of pages drawn as hospital report pages (utils/synth/report.py)
    dark_grid_rate: float = 0.0       # this share of pages with their grid printed dark (strength drawn, 0.3-1)
    fs: int = 500
    layouts: tuple = ("3x4",)
    signal_noise: float = 1.0

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {self.style!r}")
        if self.page_width < 200 or self.page_height < 150:
            raise ValueError(f"page {self.page_width}x{self.page_height} px is too small to draw an ECG on")

        for name in ARTEFACT_CONTROLS:
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 10:
                raise ValueError(f"{name} must lie between 0 and 10 (a multiple of the default strength), got {value}")
        if not 0 <= self.crumple <= 10 or (self.creases is not None and self.creases < 0):
            raise ValueError(f"crumple must lie between 0 and 10 and creases be 0 or more, got {self.crumple}, "
                             f"{self.creases}")
        if not 0 <= self.report_share <= 1:
            raise ValueError(f"report_share is a share of pages, between 0 and 1, got {self.report_share}")
        if not 0 <= self.dark_grid_rate <= 1:
            raise ValueError(f"dark_grid_rate is a share of pages, between 0 and 1, got {self.dark_grid_rate}")
        if not 0 <= self.crumple_rate <= 1:
            raise ValueError(f"crumple_rate is a share of pictures, between 0 and 1, got {self.crumple_rate}")
        if not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must lie between 1 and 100 (0: drawn per image), got {self.jpeg_quality}")

    @classmethod
    def from_config(cls, cfg, style: str, seed_offset: int = 0, **changes) -> "SynthSettings":
        """The run configuration's page, photo size, severity and JPEG quality; the seed moved by `seed_offset` so that
        each set (training, detector data, sweeps, recorded renders) draws its own pictures."""
        base = dict(style=style, seed=cfg["seed"] + seed_offset, page_width=cfg["synth_page_width"],
                    page_height=cfg["synth_page_height"], photo_max_side=cfg["synth_photo_max_side"],
                    severity=cfg["synth_severity"], jpeg_quality=cfg["synth_jpeg_quality"],
                    crumple_rate=cfg[f"synth_crumple_{style}"], report_share=cfg["synth_report_pages"])
        return cls(**{**base, **changes})

    def to_dict(self) -> dict:
        out = {**asdict(self), "layouts": list(self.layouts), "version": SYNTH_VERSION}
        # a flat sheet, no report pages and no dark grids keep the keys of the sets made before them
        drop = {"crumple": 0.0, "creases": None, "crumple_rate": 0.0, "report_share": 0.0, "dark_grid_rate": 0.0}
        return {k: v for k, v in out.items()
                if not (k in ARTEFACT_CONTROLS and v is None) and not (k in drop and v == drop[k])}

    def artefact_strengths(self) -> dict[str, float]:
        return {name: self.severity if getattr(self, name) is None else getattr(self, name)
                for name in ARTEFACT_CONTROLS}


def streams(seed: int, index: int, style: str = "photo") -> tuple[np.random.Generator, ...]:
    """(labels, waveform, style) generators of one index, independent of each other and of the worker count.

    The style is part of the key, so a scan set and a photo set made with one seed hold different ECGs.
    """
    return tuple(np.random.default_rng([seed, index, STYLES.index(style), k]) for k in range(3))


def _yolo_box(points: np.ndarray, w: int, h: int) -> list[float]:
    lo = np.clip(points.min(0), 0, [w, h])
    hi = np.clip(points.max(0), 0, [w, h])
    c, s = (lo + hi) / 2, hi - lo
    return [round(float(c[0] / w), 6), round(float(c[1] / h), 6), round(float(s[0] / w), 6),
            round(float(s[1] / h), 6)]


def annotate(pic: Picture, page_shape, lead_boxes: dict, report_boxes: dict | None = None) -> dict:
    ph, pw = page_shape[:2]
    h, w = pic.image.shape[:2]
    corners = pic.forward(np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], float))
    outline = pic.forward(page_outline(pw, ph))

    def placed(boxes: dict) -> dict:
        out = {}
        for name, (x0, y0, x1, y1) in boxes.items():
            quad = pic.forward(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float))
            out[name] = {"corners": np.round(quad, 1).tolist(),
                         "box": np.round(np.r_[quad.min(0), quad.max(0)], 1).tolist()}
        return out

    return {"image_size": [w, h], "paper_corners": np.round(corners, 2).tolist(),
            "paper_box_yolo": _yolo_box(outline, w, h), "lead_boxes": placed(lead_boxes),
            **({"report_boxes": placed(report_boxes)} if report_boxes else {})}


@dataclass
class Sample:
    """One synthesized picture: its JPEG bytes, annotation, the plotted signals (12, n) and where their traces lie in
    the picture (utils/synth/traces.py)."""
    jpeg: bytes
    ann: dict
    signals: np.ndarray
    traces: Traces


def make_sample(settings: SynthSettings, index: int, signals: np.ndarray | None = None,
                labels: dict | None = None) -> tuple[bytes, dict, np.ndarray]:
    """JPEG bytes, the annotation dict and the plotted signals (12, n) for one index (`make_picture` without the
    traces)."""
    sample = make_picture(settings, index, signals, labels)
    return sample.jpeg, sample.ann, sample.signals


def make_picture(settings: SynthSettings, index: int, signals: np.ndarray | None = None,
                 labels: dict | None = None) -> Sample:
    """One index drawn. With `signals` (a real record) the waveform stream is unused; with `labels` the label stream
    is overridden."""
    rng_labels, rng_wave, rng_style = streams(settings.seed, index, settings.style)
    drawn = sample_labels(rng_labels)
    labels = dict(labels) if labels is not None else drawn
    meta, findings = {}, []
    if signals is None:
        record = simulate(labels, rng_wave, fs=settings.fs, noise=settings.signal_noise)
        signals, meta, findings = record.signals, record.meta, record.findings
    page_style = draw_page_style(rng_style, settings.page_width, settings.page_height, settings.layouts)
    rng_report = np.random.default_rng([settings.seed, index, STYLES.index(settings.style), 4])  # its own stream
    if settings.report_share > 0 and rng_report.random() < settings.report_share:
        page_style = report_style(page_style, rng_report)
    rng_grid = np.random.default_rng([settings.seed, index, STYLES.index(settings.style), 5])  # its own stream
    if settings.dark_grid_rate > 0 and rng_grid.random() < settings.dark_grid_rate:
        page_style.grid_dark = float(rng_grid.uniform(0.3, 1.0))
    page, boxes, drawn = render_page(signals, settings.fs, LEADS, page_style, rng_style)
    report_boxes = {k: boxes.pop(k) for k in REPORT_PARTS if k in boxes}
    crumple, relief = None, None
    rng_crumple = np.random.default_rng([settings.seed, index, STYLES.index(settings.style), 3])  # its own stream
    if settings.crumple > 0 or settings.creases:  # a set strength (the sweeps): every picture
        page, crumple, relief = crumple_page(page, rng_crumple, settings.crumple, settings.creases)
    elif settings.crumple_rate > 0 and rng_crumple.random() < settings.crumple_rate:  # the training mix
        page, crumple, relief = crumple_page(page, rng_crumple, float(rng_crumple.uniform(*CRUMPLE_DRAWN)))
    if settings.style == "photo":
        pic = make_photo(page, rng_style, settings.photo_max_side, settings.severity,
                         **settings.artefact_strengths(), relief=relief)
        quality = settings.jpeg_quality or int(rng_style.integers(60, 96))
    else:  # the scanner's lid presses the sheet flat: shading and creases, no relief
        pic = make_scan(page, rng_style, settings.severity)
        quality = settings.jpeg_quality or int(rng_style.integers(75, 98))
    ok, buf = cv2.imencode(".jpg", pic.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for index {index}")
    ann = {"labels": {k: labels.get(k) for k in LABELS}, "findings": findings, "style": settings.style,
           **annotate(pic, page.shape, boxes, report_boxes), "page": page_style.to_dict(),
           "artefacts": {**pic.params, "severity": settings.severity, "jpeg_quality": quality,
                         **({"crumple": crumple} if crumple else {})},
           "waveform": meta}
    traces = placed(drawn, pic.forward, settings.fs, stroke_px(page_style, settings.page_width / PAGE_MM[0]))
    return Sample(buf.tobytes(), ann, signals, traces)
