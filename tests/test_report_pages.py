"""Hospital report pages in the synthesizer: drawn at their share, in several designs, with their header and footer
annotated, never a finding in the text, and the other pages left exactly as they were."""
import re

import numpy as np
import pytest

from utils.synth.generate import SynthSettings, make_sample
from utils.synth.report import REPORT_PARTS, header_lines, report_style
from utils.synth.render import draw_page_style

FINDING_WORDS = re.compile(r"infarct|fibrillation|flutter|hypertroph|block|bundle|ischemi|ischaemi|ST[ -]|T wave|"
                           r"\bMI\b|\bAF\b|\bLVH\b|\bRBBB\b|\bLBBB\b|normal|abnormal|sinus", re.IGNORECASE)


def test_report_pages_come_at_their_share_in_several_designs_with_header_and_footer_boxes():
    settings = SynthSettings(style="scan", seed=4, report_share=0.5, page_width=550, page_height=425)
    reports, layouts, leads = 0, set(), set()
    for i in range(24):
        _, ann, _ = make_sample(settings, i)
        page = ann["page"]
        if page["report"] is None:
            assert "report_boxes" not in ann
            continue
        reports += 1
        layouts.add(page["layout"])
        rhythm = [k for k in ann["lead_boxes"] if k.endswith("_rhythm")]
        leads.update(k.split("_")[0] for k in rhythm)
        assert set(ann["report_boxes"]) == set(REPORT_PARTS)
        w, h = ann["image_size"]
        header, footer = ann["report_boxes"]["header"]["box"], ann["report_boxes"]["footer"]["box"]
        top_of_traces = min(b["box"][1] for b in ann["lead_boxes"].values())
        assert 0 <= header[1] < header[3] <= top_of_traces + 0.02 * h  # the header sits above the traces
        assert footer[1] > max(b["box"][3] for b in ann["lead_boxes"].values()) - 0.02 * h and footer[3] <= h + 1
    assert 6 <= reports <= 18, reports  # half of 24, give or take
    assert len(layouts) >= 2


def test_the_text_of_a_report_never_names_a_finding():
    rng = np.random.default_rng(0)
    for _ in range(200):
        style = report_style(draw_page_style(rng, 1100, 850), rng)
        for column in header_lines(style.report, np.random.default_rng(style.report["seed"])):
            for line in column:
                assert not FINDING_WORDS.search(line), line
        assert style.report["title"] == "" or not FINDING_WORDS.search(style.report["title"])


def test_pages_that_are_not_reports_are_drawn_as_before():
    before = SynthSettings(style="photo", seed=8, page_width=550, page_height=425, photo_max_side=800)
    after = SynthSettings(style="photo", seed=8, page_width=550, page_height=425, photo_max_side=800,
                          report_share=0.3)
    same = 0
    for i in range(6):
        jpeg_after, ann, _ = make_sample(after, i)
        if ann["page"]["report"] is None:
            assert jpeg_after == make_sample(before, i)[0]
            same += 1
    assert same >= 2


def test_a_share_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="report_share is a share of pages, between 0 and 1, got 1.5"):
        SynthSettings(report_share=1.5)
