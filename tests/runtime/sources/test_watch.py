"""`invedge watch`: the matcher's rules, the loop on real frames and a real model and gallery, the
CLI on real encoded video files (PyAV), and against a live RTSP stream."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tiny import invedge
from video_testing import FPS, make_video
from watch_testing import THRESHOLD, item_id, rgb_of

from invspread_edge_runtime.errors import ConfigError
from invspread_edge_runtime.sources.frame import Frame, FrameSource, SourceStats
from invspread_edge_runtime.watch.matcher import Matcher

# --- the matcher ----------------------------------------------------------------------------------


def test_matcher_reports_only_scores_at_or_above_the_threshold():
    matcher = Matcher(threshold=0.8, cooldown=0, k=3)
    hits = matcher.decide(["a", "b", "c"], [0.95, 0.8, 0.79], time=0.0)
    assert [(h.rank, h.item_id) for h in hits] == [(1, "a"), (2, "b")]
    assert matcher.decide(["c"], [0.5], time=1.0) == []


def test_matcher_best_match_only_by_default():
    hits = Matcher(threshold=0.5, cooldown=0).decide(["a", "b"], [0.9, 0.85], time=0.0)
    assert [h.item_id for h in hits] == ["a"]


def test_matcher_cooldown_is_per_item_in_frame_time():
    matcher = Matcher(threshold=0.5, cooldown=5.0, k=2)
    assert [h.item_id for h in matcher.decide(["a", "b"], [0.9, 0.4], time=10.0)] == ["a"]
    # "a" is still in view; "b" was never reported, so it is reported at once
    assert [h.item_id for h in matcher.decide(["a", "b"], [0.9, 0.8], time=12.0)] == ["b"]
    assert matcher.decide(["a", "b"], [0.9, 0.8], time=14.999) == []
    # "a" out of view from 14.999: back after 4 s it is not reported, back after 5 s it is
    assert matcher.decide(["c"], [0.3], time=16.0) == []
    assert matcher.decide(["a"], [0.9], time=19.0) == []
    assert [h.item_id for h in matcher.decide(["a"], [0.9], time=24.0)] == ["a"]
    # a cooling item does not hide the next one below it
    assert [h.item_id for h in matcher.decide(["a", "b"], [0.9, 0.8], time=25.0)] == ["b"]


def test_matcher_reports_an_item_that_stays_in_view_once():
    matcher = Matcher(threshold=0.5, cooldown=1.0)
    reported = [t for t in range(100) if matcher.decide(["a"], [0.9], time=t / 10)]
    assert reported == [0]  # ten seconds in view, one report


def test_matcher_cooldown_zero_reports_every_frame():
    matcher = Matcher(threshold=0.5, cooldown=0)
    assert all(matcher.decide(["a"], [0.9], time=t / FPS) for t in range(5))


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [({"threshold": 1.5}, "--threshold"), ({"threshold": float("nan")}, "--threshold"),
     ({"cooldown": -1}, "--cooldown"), ({"k": 0}, "--k"), ({"k": 1000}, "--k")],
)  # fmt: skip
def test_matcher_refuses_values_out_of_range(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        Matcher(**kwargs)


# --- the loop, on real frames, a real model and a real gallery ------------------------------------


class ArraySource(FrameSource):
    """A finite source of RGB arrays, frame i at time i / FPS (what a decoded video file yields)."""

    def __init__(self, images: list[np.ndarray], name: str = "clip.mp4") -> None:
        self.images, self.name, self.live, self.decoder = images, name, False, "arrays"
        self.stats = SourceStats()

    def frames(self) -> Iterator[Frame]:
        for i, rgb in enumerate(self.images):
            self.stats.decoded += 1
            self.stats.kept += 1
            yield Frame(rgb, self.name, i, i / FPS)

    def close(self) -> None:
        pass


def run_loop(model, gallery, images, matcher):
    from invspread_edge_runtime.embedder import Embedder
    from invspread_edge_runtime.index.gallery import Index
    from invspread_edge_runtime.watch.loop import watch_frames

    index = Index.load(gallery)
    matches = []
    with Embedder(model, backend="ort-cpu") as embedder:
        stats = watch_frames(
            ArraySource(images),
            lambda frames: embedder.embed_frames(frames, batch_size=1),
            lambda queries, k: index.search(queries, k=k),
            matcher,
            on_match=matches.append,
        )
    return stats, matches


def test_loop_reports_gallery_images_once_per_cooldown_and_never_strangers(
    watch_model, watch_gallery, watch_known, watch_strangers
):
    a, b = rgb_of(watch_known[0]), rgb_of(watch_known[1])
    images = [*watch_strangers[:3], a, a, a, *watch_strangers[3:6], b]
    stats, matches = run_loop(watch_model, watch_gallery, images, Matcher(THRESHOLD, cooldown=1.0))
    assert [(m.frame.index, m.hit.item_id) for m in matches] == [
        (3, item_id(watch_known[0])),
        (9, item_id(watch_known[1])),
    ]
    assert all(m.hit.score >= 0.999 and m.hit.rank == 1 for m in matches)
    assert matches[0].frame.time == pytest.approx(3 / FPS)
    assert all(0 < m.latency_ms < 10_000 for m in matches)
    assert (stats.frames, stats.matches, stats.dropped) == (len(images), 2, 0)
    record = matches[0].to_dict()
    assert record["at"] == "0:00.120" and record["frame"] == 3 and record["source"] == "clip.mp4"
    json.dumps(record)


def test_loop_reports_nothing_for_images_absent_from_the_gallery(watch_model, watch_gallery, watch_strangers):
    stats, matches = run_loop(watch_model, watch_gallery, watch_strangers, Matcher(THRESHOLD, cooldown=0))
    assert matches == [] and stats.frames == len(watch_strangers)


def test_saved_matches_are_the_frames_as_png(watch_model, watch_gallery, watch_known, tmp_path):
    from invspread_edge_runtime.watch.matcher import Hit
    from invspread_edge_runtime.watch.save import MatchSaver

    frame = Frame(rgb_of(watch_known[0]), "cams/clip.mp4", 3, 3 / FPS)
    saved = Path(MatchSaver(tmp_path / "new" / "matches").save(frame, Hit(1, "class0/img1.png", 0.99)))
    assert saved.name == "clip.mp4_t0.120_class0-img1.png"
    assert np.array_equal(rgb_of(saved), frame.rgb)
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temporary file left


def test_live_latency_runs_from_the_frames_arrival(watch_model, watch_gallery, watch_known):
    from invspread_edge_runtime.embedder import Embedder
    from invspread_edge_runtime.index.gallery import Index
    from invspread_edge_runtime.watch.loop import watch_frames

    class LateSource(ArraySource):  # a live frame that waited 0.5 s in the source before the loop took it
        def frames(self) -> Iterator[Frame]:
            yield Frame(rgb_of(watch_known[0]), "rtsp://cam/x", 0, time.time() - 0.5, live=True)

    index, matches = Index.load(watch_gallery), []
    with Embedder(watch_model, backend="ort-cpu") as embedder:
        watch_frames(LateSource([]), lambda frames: embedder.embed_frames(frames, batch_size=1),
                     lambda queries, k: index.search(queries, k=k), Matcher(THRESHOLD), on_match=matches.append)  # fmt: skip
    assert len(matches) == 1 and 500 <= matches[0].latency_ms < 10_000


def test_a_frame_that_cannot_be_saved_is_said_once_and_the_watch_goes_on(tmp_path, monkeypatch, watch_known):
    import errno

    from PIL import Image

    from invspread_edge_runtime.watch.matcher import Hit
    from invspread_edge_runtime.watch.save import MatchSaver

    events: list[str] = []
    saver = MatchSaver(tmp_path, on_event=events.append)
    frame = Frame(rgb_of(watch_known[0]), "clip.mp4", 3, 3 / FPS)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    assert saver.save(frame, Hit(1, "a.png", 0.99)) is None
    assert saver.save(frame, Hit(1, "b.png", 0.99)) is None
    assert len(events) == 1 and "disk full" in events[0], events
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert saver.save(frame, Hit(1, "c.png", 0.99)) is not None


def test_save_matches_refuses_a_file(tmp_path):
    from invspread_edge_runtime.watch.save import MatchSaver

    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        MatchSaver(tmp_path / "f")


# --- the CLI on real encoded video files ---------------------------------------------------------


@pytest.fixture(scope="module")
def clips(watch_known, watch_strangers, tmp_path_factory) -> dict[str, Path]:
    """H.264 files (lossless): `seen` shows gallery image A at frames 3 to 5 (0.12 s to 0.2 s) and
    B at frame 9 among strangers; `unseen` only strangers."""
    folder = tmp_path_factory.mktemp("watch_clips")
    a, b = rgb_of(watch_known[0]), rgb_of(watch_known[1])
    return {
        "seen": make_video(
            folder / "seen.mp4", [*watch_strangers[:3], a, a, a, *watch_strangers[3:6], b], fps=FPS
        ),
        "unseen": make_video(folder / "unseen.mp4", watch_strangers, fps=FPS),
    }


def watch(capsys, *args: object) -> tuple[int, str, str]:
    code = invedge("watch", *args)
    out, err = capsys.readouterr()
    return code, out, err


def test_watch_prints_a_line_per_match_with_its_frame_time(
    capsys, watch_model, watch_gallery, clips, watch_known
):
    code, out, err = watch(capsys, watch_model, clips["seen"], "--index", watch_gallery, "--threshold", THRESHOLD,
                           "-b", "ort-cpu")  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith("0:00.120  frame 3  " + item_id(watch_known[0]) + "  1.0000")
    assert lines[1].startswith("0:00.360  frame 9  " + item_id(watch_known[1]))
    first = err.splitlines()[0]
    assert first.startswith(f"watching {clips['seen']} (file, pyav") and str(watch_gallery) in first
    assert "threshold 0.9" in first
    assert "watched 10 frames" in err and "2 matches, 0 dropped, 0 reconnects" in err


def test_watch_prints_nothing_for_a_video_of_images_absent_from_the_gallery(
    capsys, watch_model, watch_gallery, clips
):
    code, out, err = watch(
        capsys, watch_model, clips["unseen"], "--index", watch_gallery, "--threshold", THRESHOLD
    )
    assert (code, out) == (0, ""), err
    assert "watched 8 frames" in err and "0 matches" in err


def test_watch_names_with_brackets_print_as_they_are(capsys, watch_model, watch_gallery, clips, tmp_path):
    import shutil

    (tmp_path / "a[b]" / "x[").mkdir(parents=True)
    odd = shutil.copy(clips["seen"], tmp_path / "a[b]" / "x[" / "]y.mp4")  # markup: a tag, a closing tag
    code, out, err = watch(capsys, watch_model, odd, "--index", watch_gallery, "--threshold", THRESHOLD)
    assert code == 0 and "Traceback" not in err, err
    assert err.startswith(f"watching {odd} (file") and len(out.splitlines()) == 2, (out, err)


def test_watch_json_lines_and_saved_matches(capsys, watch_model, watch_gallery, clips, watch_known, tmp_path):
    saved = tmp_path / "made" / "matches"
    code, out, err = watch(capsys, watch_model, clips["seen"], "--index", watch_gallery, "--threshold", THRESHOLD,
                           "--cooldown", "0", "--json", "--save-matches", saved)  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["frame"], r["id"]) for r in records] == [
        (3, item_id(watch_known[0])), (4, item_id(watch_known[0])), (5, item_id(watch_known[0])), (9, item_id(watch_known[1]))
    ]  # fmt: skip
    first = records[0]
    assert first["time"] == 0.12 and first["at"] == "0:00.120" and first["source"] == str(clips["seen"])
    assert first["score"] >= 0.999 and first["rank"] == 1 and first["latency_ms"] > 0
    assert sorted(Path(r["saved"]).name for r in records) == sorted(p.name for p in saved.iterdir())
    picture = rgb_of(Path(records[0]["saved"]))
    assert np.abs(picture.astype(int) - rgb_of(watch_known[0])).mean() < 1.0  # the frame, as decoded


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "1.5"], "--threshold 1.5 is out of range"),
        (["--cooldown", "-1"], "--cooldown -1 is out of range"),
        (["--k", "0"], "--k 0 is out of range"),
        (["--fps", "0"], "--fps 0 is out of range"),
    ],
)
def test_watch_refuses_values_out_of_range(capsys, watch_model, watch_gallery, clips, args, message):
    code, _, err = watch(capsys, watch_model, clips["seen"], "--index", watch_gallery, *args)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def test_watch_refusals_in_one_line(
    capsys, watch_model, watch_gallery, clips, watch_known, tmp_path, tiny_export
):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    cases = [
        ([watch_model, clips["seen"]], "watch needs one gallery"),
        (
            [watch_model, clips["seen"], "--index", watch_gallery, "--save-matches", a_file],
            "is a file, not a folder",
        ),
        ([watch_model, watch_known[0], "--index", watch_gallery], "is an image"),
        ([watch_model, tmp_path / "missing.mp4", "--index", watch_gallery], "missing.mp4"),
        ([watch_model, clips["seen"], "--index", tmp_path / "none.index"], "none.index"),
        ([tiny_export / "model.onnx", clips["seen"], "--index", watch_gallery], "another embedding space"),
    ]
    for args, message in cases:
        code, out, err = watch(capsys, *args)
        assert code == 1 and out == "", (args, err)
        assert err.startswith("error: ") and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1, (args, err)


# --- against a live RTSP stream (tests/rtsp_server.py) --------------------------------------------

# Fashion-MNIST has near twins: some pictures of the streams absent from the gallery come within 0.95
# of a gallery image in raw pixels, as close as a gallery image's own frame after H.264 and RTSP (0.974
# at worst with this model). The streams' gallery leaves out the items that a picture absent from it
# comes within NEAR of; measured over whole /file and /live loops, a gallery image's own frame then
# scored 0.974 or more and the best match of any other frame 0.898 at most: 0.94 is 0.034 and 0.042
# away from them.
RTSP_THRESHOLD = 0.94
NEAR = 0.90


@pytest.fixture(scope="module")
def rtsp_gallery(watch_model, image_folder, fmnist_test, tmp_path_factory) -> Path:
    """The watch gallery less its near twins of the streams' other pictures (above), indexed."""
    import shutil

    from PIL import Image
    from rtsp_testing import FILE_FRAMES, LIVE_FIRST, LIVE_FRAMES, picture

    from invspread_edge_runtime.embedder import Embedder

    files = sorted(p for p in image_folder.rglob("img*") if p.is_file())
    shown = [*range(FILE_FRAMES), *range(LIVE_FIRST, LIVE_FIRST + LIVE_FRAMES)]  # the streams' pictures
    with Embedder(watch_model, backend="ort-cpu") as embedder:
        items = embedder.embed(files)
        frames = embedder.embed([Image.fromarray(picture(fmnist_test.images[i, 0])) for i in shown])
    kept = {int(p.stem.removeprefix("img")) for p in files}
    while True:  # a picture left out of the gallery is one more stranger to its remaining items
        strangers = frames[[n for n, i in enumerate(shown) if i not in kept]]
        near = (items @ strangers.T).max(axis=1) >= NEAR
        now = {int(p.stem.removeprefix("img")) for p, out in zip(files, near, strict=True) if not out}
        if now == kept:
            break
        kept = now
    folder = tmp_path_factory.mktemp("rtsp_gallery")
    for path in (p for p in files if int(p.stem.removeprefix("img")) in kept):
        (folder / "images" / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / "images" / path.parent.name / path.name)
    assert invedge("embed", watch_model, folder / "images", "--out", folder / "g.emb", "-b", "ort-cpu") == 0
    assert invedge("index", "build", folder / "g.emb", "--out", folder / "g.index") == 0
    return folder / "g.index"


def test_watch_prints_a_match_when_a_gallery_image_is_in_the_stream(
    capsys, rtsp_server, watch_model, rtsp_gallery
):
    rtsp_server.ensure_running()
    code, out, err = watch(capsys, watch_model, rtsp_server.file_url, "--index", rtsp_gallery,
                           "--threshold", RTSP_THRESHOLD, "--json", "--duration", "3")  # fmt: skip
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert records, err  # the stream shows most of the gallery's images in its first 4 s
    for record in records:  # frame i of the stream shows test image i: the match is that image
        assert int(Path(record["id"]).stem.removeprefix("img")) == record["frame"] % 100, record
        assert record["live"] and record["source"] == rtsp_server.file_url and record["latency_ms"] > 0
    assert err.splitlines()[0].startswith(f"watching {rtsp_server.file_url} (live, ")
    assert f"{len(records)} match" in err.splitlines()[-1]


def test_watch_prints_nothing_for_a_stream_of_images_absent_from_the_gallery(
    capsys, rtsp_server, watch_model, rtsp_gallery
):
    rtsp_server.ensure_running()
    code, out, err = watch(capsys, watch_model, rtsp_server.live_url, "--index", rtsp_gallery,
                           "--threshold", RTSP_THRESHOLD, "--duration", "2")  # fmt: skip
    assert (code, out) == (0, ""), err
    summary = err.splitlines()[-1]
    assert summary.startswith("watched ") and " 0 frames" not in summary and "0 matches" in summary


FIRST_MATCH_S = 60.0  # the first frame of a live stream through the model, on 2 busy cores


def watching(url: str, model: Path, gallery: Path, *extra: object) -> subprocess.Popen:
    """`invedge watch URL` in a process, every frame a match (--threshold -1 --cooldown 0, JSON)."""
    command = "import sys; from invspread_edge_runtime.cli import main; sys.exit(main())"
    args = [sys.executable, "-c", command, "watch", model, url, "--index", gallery,
            "--json", "--threshold", "-1", "--cooldown", "0", *extra]  # fmt: skip
    return subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def first_match(proc: subprocess.Popen) -> dict:
    """The first JSON line the watch prints: a frame was searched (bounded: FIRST_MATCH_S)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(FIRST_MATCH_S)
    assert lines and lines[0], f"no match within {FIRST_MATCH_S} s (exit {proc.poll()})"
    return json.loads(lines[0])


def test_ctrl_c_ends_a_live_watch_with_its_summary(rtsp_server, watch_model, watch_gallery):
    rtsp_server.ensure_running()
    proc = watching(rtsp_server.live_url, watch_model, watch_gallery)
    try:
        assert first_match(proc)["live"]  # frames flow and are searched from here on
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "(stopped by Ctrl-C)" in err and "Traceback" not in err
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("watched ") and "0 reconnects" in summary and " 0 frames" not in summary


def test_a_stream_lost_mid_watch_is_one_error_line_after_the_summary(rtsp_server, watch_model, watch_gallery):
    rtsp_server.ensure_running()
    proc = watching(
        rtsp_server.live_url, watch_model, watch_gallery, "--open-timeout", "2", "--reconnect", "1"
    )
    try:
        first_match(proc)
        rtsp_server.kill()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        rtsp_server.restart()
    lines = err.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert lines[-1].startswith("error: ") and rtsp_server.live_url in lines[-1], err
    assert lines[-2].startswith("watched ") and " 0 frames" not in lines[-2], err


def test_watch_a_milvus_gallery(capsys, watch_model, watch_gallery, clips, watch_known, tmp_path):
    pytest.importorskip("milvus_lite")
    store = f"milvus:{tmp_path / 'g.db'}"
    gallery = ["--store", store, "--collection", "known"]
    assert invedge("index", "build", watch_gallery.parent / "g.emb", *gallery) == 0
    capsys.readouterr()
    code, out, err = watch(capsys, watch_model, clips["seen"], *gallery, "--threshold", THRESHOLD)
    assert code == 0, err
    assert [line.split()[3] for line in out.splitlines()] == [
        item_id(watch_known[0]),
        item_id(watch_known[1]),
    ]
    assert "known in " in err.splitlines()[0]
