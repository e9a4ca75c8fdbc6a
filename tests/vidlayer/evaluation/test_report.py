"""The report: readable in both formats, with a picture of each of the worst clips."""

import pytest

from vidlayer.evaluation.evaluate import evaluate
from vidlayer.evaluation.report import write_report


@pytest.mark.parametrize("suffix", [".md", ".html"])
def test_report_lists_every_clip_and_pictures_the_worst(inline_build, raw, tmp_path, suffix):
    out, _ = inline_build
    evaluation = evaluate(out, raw.parent)
    report = write_report(evaluation, out, raw.parent, tmp_path / f"report{suffix}", worst=1)
    text = report.read_text()
    for row in evaluation.rows:
        assert row["clip"] in text
    assert "J_all_clips" in text and "dropped" in text
    [picture] = (tmp_path / "report_images").glob("*.png")
    worst = min(evaluation.scored, key=lambda r: r["J"])
    assert picture.stem == worst["sample"] and f"report_images/{picture.name}" in text
    with pytest.raises(ValueError, match=".md or .html"):
        write_report(evaluation, out, raw.parent, tmp_path / "report.txt")
