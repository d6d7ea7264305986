"""Hospital report pages: the printout around the traces, as an electrocardiograph prints it.

A share of the synthesizer's pages (`synth_report_pages`) is drawn as a report of one of several designs: a header
block of patient fields (name, id, date of birth, room, technician, referring doctor) in two or three columns, a title,
measurement-like fields whose values are drawn at random (never from the record: no finding can be read from the
text), and interpretation lines that say nothing of the findings ("Unconfirmed report", a blank line); a footer
with the paper speed, gain, filter settings, the machine and a page number; the header on plain paper or over the
grid; a dotted or faint grid; bold bars between the lead columns; a 3x4, 6x2 or 12x1 layout, with a rhythm strip of
lead II, V1 or III; the rows squeezed between a header of 40-75 mm and a footer. Never a label in the text.

`report_style` turns a drawn page style into a report's; `draw_report` prints the header and footer before the
traces are drawn and returns their boxes (page pixels), which the annotation keeps (`report_boxes`) so that the crop
can be checked against them.
"""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

REPORT_PARTS = ("header", "footer")
TITLES = ("12 Lead; Standard Placement", "Resting 12-lead ECG", "ECG Report", "12-Lead Electrocardiogram", "", "")
MACHINES = ("MAC 5500 HD", "ELI 350", "PageWriter TC50", "CardioSoft", "AT-102 plus", "Cardiovit MS-2015")
NOTES = ("Unconfirmed report", "Unconfirmed Diagnosis", "Report confirmed by:", "Interpretation requires physician "
         "review", "Technically limited study", "")
FIELDS = ("Name", "ID", "DOB", "Room", "Loc", "Technician", "Referred by", "Ward", "Order")
MEASURES = (("Vent. rate", "BPM", 45, 130), ("PR interval", "ms", 110, 240), ("QRS duration", "ms", 70, 150),
            ("QT/QTc", "ms", 330, 480), ("P-R-T axes", "", -40, 100))
LAYOUT_CHOICES = (("3x4", 0.6), ("6x2", 0.2), ("12x1", 0.2))
RHYTHM_LEADS = (("II", 0.7), ("V1", 0.15), ("III", 0.15))


def report_style(style, rng: np.random.Generator):
    """This page style made a report page of a design drawn here (layout, rhythm lead, grid, separators, header and
    footer heights, which fields are printed)."""
    names, weights = zip(*LAYOUT_CHOICES)
    leads, lead_weights = zip(*RHYTHM_LEADS)
    header_mm = float(rng.uniform(40, 75))
    report = {"design": int(rng.integers(3)), "plain_header": bool(rng.random() < 0.6),
              "title": str(rng.choice(TITLES)), "columns": int(rng.integers(2, 4)),
              "measures": bool(rng.random() < 0.6), "notes": int(rng.integers(0, 3)),
              "footer_lines": int(rng.integers(1, 3)), "machine": str(rng.choice(MACHINES)),
              "header_mm": header_mm, "seed": int(rng.integers(2**31))}
    footer_mm = 6.0 + 5.0 * report["footer_lines"]
    return replace(style, report=report, layout=str(rng.choice(names, p=weights)),
                   rhythm_lead=str(rng.choice(leads, p=lead_weights)), grid_dots=bool(rng.random() < 0.3),
                   minor_grid=bool(rng.random() < 0.8), separators=bool(rng.random() < 0.5),
                   top_mm=header_mm + float(rng.uniform(4, 10)), bottom_mm=footer_mm,
                   header_lines=0)


def _random_word(rng, lo=4, hi=10) -> str:
    return "".join(rng.choice(list("ABCDEFGHIJKLMNOPRSTUVWXYZ"), int(rng.integers(lo, hi))))


def header_lines(report: dict, rng: np.random.Generator) -> list[list[str]]:
    """The header's text, column by column: patient fields, measurement-like fields (random values), notes."""
    named = ("Name", "Technician", "Referred by")
    fields = [f"{name}: {_random_word(rng) if name in named else rng.integers(10**4, 10**7)}"
              for name in rng.choice(FIELDS, size=int(rng.integers(3, 7)), replace=False)]
    columns = [fields]
    if report["measures"]:
        columns.append([f"{name} {rng.integers(lo, hi)} {unit}".strip() for name, unit, lo, hi in MEASURES])
    notes = [str(v) for v in rng.choice(NOTES, size=report["notes"], replace=False)]
    if notes or report["columns"] == 3:
        columns.append(notes or [f"{rng.integers(1, 29):02d}-{rng.integers(1, 13):02d}-{rng.integers(2000, 2025)}"])
    return columns


def draw_report(img: np.ndarray, s, px_mm: float, font: int) -> dict:
    """Print a report page's header (over `s.report['header_mm']`) and footer on the page; returns their boxes in
    page pixels as {'header': [x0, y0, x1, y1], 'footer': [...]}, in the page's font (an OpenCV font)."""
    r = s.report
    local = np.random.default_rng(r["seed"])  # the text of one design, whatever else the page draws
    h, w = img.shape[:2]
    ink = (int(s.trace_rgb[2]), int(s.trace_rgb[1]), int(s.trace_rgb[0]))
    paper = (int(s.paper_rgb[2]), int(s.paper_rgb[1]), int(s.paper_rgb[0]))
    written: list[tuple[int, int, int, int]] = []

    def write(text: str, x_mm: float, y_mm: float, size_mm: float = 2.8) -> None:
        if not text:
            return
        scale = size_mm * px_mm / 22.0
        thick = max(1, int(round(scale * 1.6)))
        (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
        x, y = int(x_mm * px_mm), int(y_mm * px_mm)
        cv2.putText(img, text, (x, y), font, scale, ink, thick, cv2.LINE_AA)
        written.append((x, y - th, x + tw, y + 4))

    header_bottom = r["header_mm"] * px_mm
    if r["plain_header"]:  # the header printed on plain paper, the grid below it
        img[:int(header_bottom)] = paper
    write(r["title"], 12, 8, 4.0)
    y0 = 8 + (6 if r["title"] else 0)
    for c, column in enumerate(header_lines(r, local)):
        x_mm = 12 + c * (250 / max(2, r["columns"]))
        for i, line in enumerate(column):
            y = y0 + 4.6 * i
            if y < r["header_mm"] - 2:
                write(line, x_mm, y, float(local.uniform(2.4, 3.2)))
    boxes = {}
    if written:
        xs0, ys0, xs1, ys1 = zip(*written)
        boxes["header"] = [float(min(xs0)), float(max(0, min(ys0))), float(min(w, max(xs1))), float(max(ys1))]
    footer_start = len(written)
    speed = f"{local.choice(['25mm/s', '25 mm/sec', 'Speed: 25 mm/s'])}"
    gain = f"{local.choice(['10mm/mV', '10 mm/mV', 'Limb: 10 mm/mV  Chest: 10 mm/mV'])}"
    filt = f"{local.choice(['0.05', '0.15', '0.5'])}-{local.choice([40, 100, 150])} Hz  {local.choice(['50', '60'])} Hz"
    lines = [f"{speed}    {gain}    {filt}", f"{r['machine']}    Page 1 of 1"][:r["footer_lines"]]
    for i, line in enumerate(lines):
        write(line, 12, (h / px_mm) - 3 - 4.6 * (len(lines) - 1 - i), 2.6)
    if len(written) > footer_start:
        xs0, ys0, xs1, ys1 = zip(*written[footer_start:])
        boxes["footer"] = [float(min(xs0)), float(min(ys0)), float(min(w, max(xs1))), float(min(h, max(ys1)))]
    return boxes
