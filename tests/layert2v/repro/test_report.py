"""The ablation report: its numbers, its verdicts on the claims, and its figures, from synthetic results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from layert2v.repro.report import adherence, claim_verdict, metric_verdict, write_results

KEYS = ("colour_accuracy", "shape_accuracy", "motion_accuracy", "texture_accuracy", "bg_colour_accuracy",
        "drift_accuracy", "coherence", "bg_leak", "fg_texture", "alpha_edge_width", "alpha_soft", "temporal_change")


def summary(acc: float | None = 0.5, coherence: float | None = 0.05, train: float | None = None,
            test: float | None = None, **values: float | None) -> dict[str, Any]:
    """A GenerationEvaluation.summary() whose accuracies are all `acc` unless named in `values`."""
    base = {"samples": 8, "objects": 12, **{k: acc for k in KEYS if k.endswith("_accuracy")},
            "coherence": coherence, "bg_leak": 0.01, "fg_texture": 0.02, "alpha_edge_width": 1.1,
            "alpha_soft": 0.01, "temporal_change": 0.01, **values}
    splits = {name: {**base, **{k: v for k in KEYS if k.endswith("_accuracy")}}
              for name, v in (("train", train), ("test", test)) if v is not None}
    return {**base, "by_split": splits} if splits else base


def row(name: str, summaries: list[dict[str, Any]], group: str = "variant", **seed_extra: Any) -> dict[str, Any]:
    seeds = {str(i): {"summary": s, "metrics": None, "sheet": None, "seconds": 10.0 + i}
             for i, s in enumerate(summaries)}
    for key, per_seed in seed_extra.items():
        for seed, value in per_seed.items():
            seeds[seed][key] = value
    return {"name": name, "group": group, "label": name.replace("_", " "), "what": f"the {name} run", "seeds": seeds}


def results(rows: list[dict[str, Any]], claims: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"title": "Toy ablations", "settings": {"command": "make repro-toy", "train samples": 2000,
                                                  "sizes": [32, 48]},
            "rows": rows, "claims": claims or []}


def table(markdown: str, first: str, has: str = "") -> list[dict[str, str]]:
    """The first markdown table whose first column is `first` (and that has a column `has`), as dicts by column."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |") and f"| {has}" in line)
    split = lambda line: [c.strip() for c in line.strip().strip("|").split(" | ")]  # noqa: E731
    header = split(lines[start])
    body = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        body.append(dict(zip(header, split(line))))
    return body


def write_metrics(path: Path, losses: list[float], steps: list[int] | None = None) -> Path:
    steps = steps or list(range(len(losses)))
    lines = [json.dumps({"step": s, "loss": v, "lr": 1e-4}) for s, v in zip(steps, losses)]
    lines.append(json.dumps({"step": steps[-1], "eval": "done"}))  # no loss: ignored
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sheet(path: Path, size: tuple[int, int] = (120, 40), colour: str = "red") -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def test_adherence_is_the_mean_of_the_measured_accuracies():
    assert adherence({"colour_accuracy": 1.0, "shape_accuracy": None, "motion_accuracy": 0.5,
                      "texture_accuracy": 0.0}) == pytest.approx(0.5)
    assert adherence({"colour_accuracy": 0.2, "shape_accuracy": 0.4, "motion_accuracy": 0.6,
                      "texture_accuracy": 0.8}) == pytest.approx(0.5)
    assert adherence({k: None for k in KEYS}) is None


def test_table_shows_mean_and_sample_std_over_seeds(tmp_path):
    full = row("full", [summary(colour_accuracy=v, coherence=c) for v, c in ((0.5, 0.01), (0.6, 0.02), (0.7, 0.03))])
    md = write_results(results([full]), tmp_path / "RESULTS.md", tmp_path / "figures").read_text()
    assert md.startswith("# Toy ablations\n")
    assert "- train samples: 2000" in md and "- sizes: 32, 48" in md
    (cells,) = table(md, "row")
    assert cells["row"] == "full" and cells["seeds"] == "3"
    assert cells["colour"] == "0.600 ± 0.100"
    assert cells["shape"] == "0.500 ± 0.000"
    assert cells["coherence"] == "0.020 ± 0.010"
    # adherence per seed: (colour + 3 * 0.5) / 4 = 0.5, 0.525, 0.55
    assert cells["adherence"] == "0.525 ± 0.025"


def test_missing_values_render_as_dash_and_do_not_count(tmp_path):
    seeds = [summary(colour_accuracy=0.4, shape_accuracy=None, bg_leak=None),
             summary(colour_accuracy=None, shape_accuracy=None, bg_leak=None),
             summary(colour_accuracy=0.8, shape_accuracy=None, bg_leak=None)]
    md = write_results(results([row("full", seeds)]), tmp_path / "RESULTS.md", tmp_path / "figures").read_text()
    (cells,) = table(md, "row")
    assert cells["shape"] == "–" and cells["bg_leak"] == "–"
    assert cells["colour"] == "0.600 ± 0.283 (n=2)"
    # adherence of seed 1 still counts its other two accuracies: 0.5; seeds 0 and 2: (0.4 + 1.0) / 3, (0.8 + 1.0) / 3
    assert cells["adherence"] == "0.522 ± 0.069"


def test_best_variant_is_bold_only_among_variants(tmp_path):
    rows = [row("full", [summary(0.8, coherence=0.02)] * 2), row("no_x", [summary(0.6, coherence=0.01)] * 2),
            row("truth", [summary(1.0, coherence=0.0)] * 2, group="reference")]
    md = write_results(results(rows), tmp_path / "RESULTS.md", tmp_path / "figures").read_text()
    cells = {c["row"]: c for c in table(md, "row")}
    assert cells["full"]["colour"] == "**0.800 ± 0.000**" and cells["no x"]["colour"] == "0.600 ± 0.000"
    assert cells["no x"]["coherence"] == "**0.010 ± 0.000**"  # lower is better
    assert "**" not in cells["truth"]["colour"]
    assert "**" not in cells["full"]["bg_leak"] + cells["no x"]["bg_leak"]  # all variants tie: no best
    lone = write_results(results([rows[0]]), tmp_path / "lone.md", tmp_path / "figures").read_text()
    assert "**" not in table(lone, "row")[0]["colour"]


def test_generalisation_table_splits_adherence(tmp_path):
    full = row("full", [summary(0.5, train=t, test=h) for t, h in ((0.9, 0.4), (0.8, 0.5), (0.7, 0.6))])
    md = write_results(results([full]), tmp_path / "RESULTS.md", tmp_path / "figures").read_text()
    (cells,) = table(md, "row", "adherence, seen pairs (train)")
    assert cells["adherence, seen pairs (train)"] == "0.800 ± 0.100"
    assert cells["adherence, held-out pairs (test)"] == "0.500 ± 0.100"


def claim(name: str, ablation: str, metrics: list[str]) -> dict[str, Any]:
    return {"claim": name, "baseline": "full", "ablation": ablation, "metrics": metrics}


def test_claims_follow_the_spread_between_seeds(tmp_path):
    rows = [row("full", [summary(a, coherence=0.010) for a in (0.80, 0.82, 0.84)]),
            row("worse", [summary(a, coherence=0.030) for a in (0.50, 0.52, 0.54)]),  # both metrics worse
            row("better", [summary(a, coherence=0.001) for a in (0.95, 0.96, 0.97)]),  # both metrics better
            row("overlap", [summary(a, coherence=0.010) for a in (0.70, 0.82, 0.94)]),
            row("mixed", [summary(a, coherence=0.030) for a in (0.95, 0.96, 0.97)])]  # prompts better, layers worse
    claims = [claim("removing worse hurts", "worse", ["adherence", "coherence"]),
              claim("removing better hurts", "better", ["adherence", "coherence"]),
              claim("removing overlap hurts", "overlap", ["adherence"]),
              claim("removing mixed hurts", "mixed", ["adherence", "coherence"]),
              claim("removing ghost hurts", "ghost", ["adherence"])]
    md = write_results(results(rows, claims), tmp_path / "RESULTS.md", tmp_path / "figures").read_text()
    verdicts = {(c["claim"], c["metric"]): c["verdict"] for c in table(md, "claim")}
    assert verdicts["removing worse hurts", "adherence"] == "supports"
    assert verdicts["removing worse hurts", "coherence"] == "supports"
    assert verdicts["removing better hurts", "coherence"] == "contradicts"
    assert verdicts["removing overlap hurts", "adherence"] == "within noise"
    assert verdicts["removing mixed hurts", "coherence"] == "supports"
    assert verdicts["removing ghost hurts", "adherence"] == "not measured"
    assert "- removing worse hurts (`full` vs `worse`): **holds at this scale**:" in md
    assert "- removing better hurts (`full` vs `better`): **contradicted at this scale**:" in md
    assert "- removing overlap hurts (`full` vs `overlap`): **not resolved at this scale**:" in md
    assert "- removing mixed hurts (`full` vs `mixed`): **not resolved at this scale**:" in md
    assert "- removing ghost hurts (`full` vs `ghost`): **not measured** (no row `ghost`)." in md
    assert "Of 5 claims, 1 hold, 1 are contradicted, 2 are not resolved and 1 were not measured" in md
    assert "one seed" not in md


def test_metric_verdict_direction_and_tolerance():
    # coherence: lower is better, so a higher ablation supports the claim that the baseline is better
    assert metric_verdict([0.010, 0.011], [0.020, 0.021], "coherence") == "supports"
    assert metric_verdict([0.020, 0.021], [0.010, 0.011], "coherence") == "contradicts"
    # a difference below the tolerance is noise even with no spread between seeds
    assert metric_verdict([0.80, 0.80], [0.79, 0.79], "adherence") == "within noise"
    assert metric_verdict([0.80], [0.70], "adherence") == "supports"
    assert metric_verdict([], [0.70], "adherence") == "not measured"
    assert claim_verdict(["supports", "within noise", "not measured"]) == "holds"
    assert claim_verdict(["not measured", "not measured"]) == "not measured"


def test_one_seed_claims_say_no_spread_was_measured(tmp_path):
    rows = [row("full", [summary(0.9)]), row("no_x", [summary(0.5)]), row("empty", [summary(None, None)])]
    claims = [claim("x helps", "no_x", ["adherence"]), claim("nothing", "empty", ["adherence", "coherence"])]
    md = write_results(results(rows, claims), tmp_path / "RESULTS.md", tmp_path / "figures").read_text()
    assert "**holds at this scale** (one seed: no spread measured)" in md
    assert "(`full` vs `empty`): **not measured** (no values to compare)." in md
    assert [c["colour"] for c in table(md, "row")] == ["**0.900**", "0.500", "–"]


def test_unknown_claim_metric_is_refused(tmp_path):
    with pytest.raises(ValueError, match="colour"):
        write_results(results([row("full", [summary()])], [claim("c", "full", ["colour"])]), tmp_path / "R.md",
                      tmp_path / "figures")


def test_figures_are_written_and_linked_relatively(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    metrics = {str(i): str(write_metrics(runs / f"m{i}.jsonl", [2.0 / (1 + s + i) for s in range(30)]))
               for i in range(3)}
    sheets = {"1": str(write_sheet(runs / "full1.png")), "2": str(write_sheet(runs / "full2.png", colour="blue"))}
    rows = [row("full", [summary()] * 3, metrics=metrics, sheet=sheets),
            row("no_x", [summary()] * 3, metrics={"0": str(metrics["0"])}, sheet={"0": str(write_sheet(
                runs / "nox.png", (60, 60), "lime"))}),
            row("truth", [summary()] * 3, group="reference")]
    out_md = tmp_path / "docs" / "RESULTS.md"
    md = write_results(results(rows), out_md, tmp_path / "docs" / "figures").read_text()
    assert "![loss curves](figures/loss_curves.png)" in md
    assert "![generated layers](figures/samples_grid.png)" in md
    for name in ("loss_curves.png", "samples_grid.png"):
        with Image.open(out_md.parent / "figures" / name) as image:
            image.verify()
    with Image.open(out_md.parent / "figures" / "samples_grid.png") as grid:
        # widest sheet sets the width; both sheets are scaled to it
        assert grid.width == 120
        assert grid.convert("RGB").getpixel((60, grid.height - 5)) == (0, 255, 0)  # no_x's sheet comes last
        two = grid.height
    rows[1]["seeds"]["0"]["sheet"] = None
    write_results(results(rows), out_md, tmp_path / "docs" / "figures")
    with Image.open(out_md.parent / "figures" / "samples_grid.png") as grid:
        assert grid.height < two
        assert grid.convert("RGB").getpixel((60, grid.height - 5)) == (255, 0, 0)  # full's lowest sheet: seed 1, red


def test_without_metrics_or_sheets_the_figures_are_skipped(tmp_path):
    md = write_results(results([row("full", [summary()] * 3)]), tmp_path / "RESULTS.md", tmp_path / "figures")
    text = md.read_text()
    assert "no loss figure" in text and "no grid" in text
    assert not (tmp_path / "figures" / "loss_curves.png").exists()
    assert not (tmp_path / "figures" / "samples_grid.png").exists()


def test_loss_band_uses_the_steps_every_seed_shares(tmp_path):
    from layert2v.repro.report import _loss_band

    a = write_metrics(tmp_path / "a.jsonl", [1.0, 1.0, 1.0, 1.0], [0, 10, 20, 30])
    b = write_metrics(tmp_path / "b.jsonl", [3.0, 3.0, 3.0], [0, 10, 20])
    steps, mean, low, high = _loss_band(row("r", [summary()] * 2, metrics={"0": str(a), "1": str(b)}))
    assert steps.tolist() == [0, 10, 20]
    assert mean.tolist() == pytest.approx([2.0] * 3) and low.tolist() == [1.0] * 3 and high.tolist() == [3.0] * 3
    # EMA 0.9 from the first value: 1, then 0.9 + 0.1 * 11 = 2
    c = write_metrics(tmp_path / "c.jsonl", [1.0, 11.0])
    assert _loss_band(row("r", [summary()], metrics={"0": str(c)}))[1].tolist() == pytest.approx([1.0, 2.0])
