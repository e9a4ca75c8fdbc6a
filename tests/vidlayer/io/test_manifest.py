import json

from vidlayer.clip import Captions, Clip, InputItem, Outcome, Status
from vidlayer.io.manifest import Journal, read_manifest, rows_for, write_parquet


def test_journal_round_trip_and_torn_tail(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    journal.write_header({"pipeline": "p", "config_hash": "h"})
    journal.commit([{"input_key": "a"}], shard="shards/shard-000000.tar")
    journal.commit([{"input_key": "b"}])
    with open(journal.path, "ab") as f:
        f.write(b'{"type": "commit", "rows": [{"input_k')  # a crash mid-append
    header, commits = journal.read()
    assert header["config_hash"] == "h"
    assert [(c.rows, c.shard) for c in commits] == [([{"input_key": "a"}], "shards/shard-000000.tar"),
                                                    ([{"input_key": "b"}], None)]
    journal.commit([{"input_key": "c"}])  # appends cleanly after the truncated tail
    assert [c.rows[0]["input_key"] for c in journal.read()[1]] == ["a", "b", "c"]


def outcome_clip(key, metrics):
    clip = Clip(key=key, input_key="in", path="/x.mp4", source="x.mp4", captions=Captions("full", ["fg"], "bg"),
                span=(0.5, 3.5), fps=16.0, metrics=metrics, timings={"segment": 1.5})
    clip.sample = {"json": {"frames": 49, "width": 848, "height": 480, "num_foregrounds": 1}}
    return clip


def test_rows_for_an_input_with_a_written_and_a_dropped_clip(tmp_path):
    item = InputItem(key="in", path="/x.mp4", source="x.mp4", caption="full")
    outcomes = [
        Outcome("in_s00w00", Status.WRITTEN, clip=outcome_clip("in_s00w00", {"quality_composite_error": 0.01})),
        Outcome("in_s01w00", Status.DROPPED, "quality", "alpha_flicker", "too much", clip=outcome_clip("in_s01w00", {})),
    ]
    rows = rows_for(item, outcomes, "default", "abc")
    assert [(r["kind"], r["key"], r["status"]) for r in rows] == [
        ("sample", "in_s00w00", "written"), ("sample", "in_s01w00", "dropped"), ("input", "in", "written")]
    assert rows[0]["frames"] == 49 and rows[0]["metrics"] == {"quality_composite_error": 0.01}
    assert rows[2]["timings"] == {"segment": 3.0}
    write_parquet(rows, tmp_path / "m.parquet")
    back = read_manifest(tmp_path / "m.parquet")
    assert {r["key"]: r["status"] for r in back} == {"in": "written", "in_s00w00": "written", "in_s01w00": "dropped"}
    assert back[0]["metrics"] == {"quality_composite_error": 0.01} and back[0]["span_start_s"] == 0.5
    json.dumps(back, default=str)


def test_input_dropped_before_any_clip_has_only_its_own_row():
    item = InputItem(key="in", path="/x.mp4", source="x.mp4")
    rows = rows_for(item, [Outcome("in", Status.DROPPED, "decode", "empty_file", "0 bytes")], "default", "abc")
    assert [(r["kind"], r["status"], r["stage"], r["reason"]) for r in rows] == [("input", "dropped", "decode", "empty_file")]
