"""`invedge search` with video frames as queries, and galleries holding frames: text, --json, --grid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from video_testing import FPS, N_FRAMES

from invspread_edge_runtime.cli import create_app, run
from invspread_edge_runtime.sources.frame import frame_id

pytest.importorskip("av")


@pytest.fixture(autouse=True)
def runtime_alone(monkeypatch):
    import invspread_edge_runtime.plugins as plugins

    monkeypatch.setattr(plugins, "entry_points", lambda group: [])


def invedge(capsys, *argv: object) -> tuple[int, str, str]:
    app = create_app()
    capsys.readouterr()
    code = run(app, [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, tiny_export, fmnist_frames, videos) -> Path:
    """An index of the first 10 frame images as PNGs and of the MJPEG video's every 10th frame."""
    root = tmp_path_factory.mktemp("gallery")
    for i in range(10):
        Image.fromarray(fmnist_frames[i]).save(root / f"img{i:02d}.png")
    shutil.copy(videos["mjpeg.avi"], root / "clip.avi")
    emb, index = root.parent / "g.emb", root.parent / "g.index"
    model = tiny_export / "model.onnx"
    assert run(create_app(), ["embed", str(model), str(root), "--out", str(emb), "--every", "10"]) == 0
    assert run(create_app(), ["index", "build", str(emb), "--out", str(index)]) == 0
    return index


def test_video_frames_as_queries_find_their_images(capsys, gallery, videos):
    code, out, err = invedge(
        capsys, "search", gallery, videos["h264.mp4"], "--every", "25", "--k", "1", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    results = report["results"]
    assert [r["query"] for r in results] == [frame_id(str(videos["h264.mp4"]), t) for t in (0.0, 1.0)]
    assert [r["index"] for r in results] == [0, 25] and [r["time"] for r in results] == [0.0, 1.0]
    assert results[0]["source"].endswith("h264.mp4") and results[1]["at"] == "0:01.000"
    assert results[0]["neighbours"][0]["id"] == "img00.png"  # frame 0 is image 0
    assert results[0]["neighbours"][0]["score"] >= 0.99


def test_a_gallery_frame_result_shows_its_time(capsys, gallery, fmnist_frames, tmp_path):
    Image.fromarray(fmnist_frames[20]).save(tmp_path / "q20.png")  # frame 20 of clip.avi
    code, out, err = invedge(capsys, "search", gallery, tmp_path / "q20.png", "--k", "1", "--json")
    assert code == 0, err
    hit = json.loads(out)["results"][0]["neighbours"][0]
    assert hit["id"] == frame_id("clip.avi", 20 / FPS) and hit["at"] == "0:00.800" and hit["time"] == 0.8
    code, out, err = invedge(capsys, "search", gallery, tmp_path / "q20.png", "--k", "1")
    assert code == 0, err
    assert "clip.avi#t=0.800" in out and "0:00.800" in out


def test_grid_draws_query_frames_and_result_frames(capsys, gallery, videos, tmp_path):
    grid = tmp_path / "grid.png"
    code, out, err = invedge(
        capsys, "search", gallery, videos["mjpeg.avi"], "--every", "20", "--k", "3", "--grid", grid
    )
    assert code == 0, err
    picture = np.asarray(Image.open(grid).convert("RGB"))
    thumb, pad = 112, 7  # grid.draw_grid's defaults: cells of thumb + 2 * pad
    assert picture.shape[0] % len(range(0, N_FRAMES, 20)) == 0
    # each query's best match is its own frame in clip.avi (the same MJPEG file), decoded from it
    for t in (0.0, 0.8, 1.6):
        assert frame_id("clip.avi", t) in out
    first_result = picture[pad : pad + thumb, thumb + 3 * pad : 2 * thumb + 3 * pad]
    assert first_result.std() > 10  # a picture, not the grey tile of a missing one


def test_a_live_result_is_a_labelled_placeholder(tmp_path, fmnist_frames):
    from invspread_edge_runtime.index.result import SearchResult
    from invspread_edge_runtime.search.images import ImageSearch, draw_results
    from invspread_edge_runtime.sources.frame import Frame

    live_id = frame_id("rtsp://cam/x", 1_700_000_000.5)
    result = SearchResult(np.array([[0.9]], np.float32), np.array([[0]]), [live_id], [""], "numpy")
    query = Frame(fmnist_frames[0], "clip.mp4", 0, 0.0)
    search = ImageSearch(result, None, [query], None)
    records = search.records()
    assert records[0]["query"] == "clip.mp4#t=0.000" and records[0]["neighbours"][0]["at"].startswith("20")
    out = draw_results(search, tmp_path / "g.png")
    assert Image.open(out).size[0] > 0


def test_a_stream_query_needs_an_end(capsys, gallery):
    code, _, err = invedge(capsys, "search", gallery, "rtsp://127.0.0.1:9/none", "--k", "1")
    assert code == 1 and "--duration" in err and err.count("error:") == 1


def test_image_queries_are_as_before(capsys, gallery, fmnist_frames, tmp_path):
    Image.fromarray(fmnist_frames[3]).save(tmp_path / "q.png")
    code, out, err = invedge(capsys, "search", gallery, tmp_path / "q.png", "--k", "2", "--json")
    assert code == 0, err
    record = json.loads(out)["results"][0]
    assert set(record) == {"query", "found", "neighbours"} and record["neighbours"][0]["id"] == "img03.png"
    assert set(record["neighbours"][0]) == {"rank", "id", "score"}


def test_a_stream_as_query_with_max_frames(capsys, gallery, rtsp_server):
    rtsp_server.ensure_running()
    url = rtsp_server.live_url
    code, out, err = invedge(capsys, "search", gallery, url, "--max-frames", "2", "--k", "1", "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert len(results) == 2 and all(
        r["source"] == url and r["query"].startswith(f"{url}#t=") for r in results
    )
    assert all(r["at"].startswith("20") for r in results)  # a live frame's time: the local date and time


def test_a_video_on_a_web_server_is_named_without_its_password():
    from invspread_edge_runtime.search.images import video_name
    from invspread_edge_runtime.sources.spec import VideoInput, parse_source

    spec = parse_source("https://user:secret@host/clips/a.mp4")
    assert video_name(VideoInput(spec, spec.name)) == "https://user@host/clips/a.mp4"


def test_search_records_say_a_frames_time():
    """Every caller of SearchResult.records (search, serve) gets a frame's time under "at"."""
    from invspread_edge_runtime.index.result import SearchResult

    ids = [frame_id("clip.mp4", 12.48), "photo.png"]
    result = SearchResult(np.array([[0.9, 0.5]], np.float32), np.array([[0, 1]]), ids, ["", ""], "numpy")
    record = result.records([frame_id("q.mp4", 1.0)])[0]
    assert (record["time"], record["at"]) == (1.0, "0:01.000")
    first, second = record["neighbours"]
    assert (first["time"], first["at"]) == (12.48, "0:12.480") and "at" not in second


def test_grid_query_frames_are_kept_small_and_rows_capped(capsys, gallery, videos, tmp_path, monkeypatch):
    import invspread_edge_runtime.search.images as images

    monkeypatch.setattr(images, "GRID_ROWS", 3)
    grid = tmp_path / "g.png"
    found = images.search_gallery(images.SearchOptions([videos["h264.mp4"]], index=gallery, k=2, grid=grid))
    assert len(found.queries) == N_FRAMES and grid.is_file()
    assert all(q.rgb.size == 0 for q in found.queries[3:])  # not drawn: no picture kept
    assert max(found.queries[0].rgb.shape[:2]) <= images.GRID_THUMB
    assert any("first 3 of" in note for note in found.result.notes)
