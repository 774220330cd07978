"""`invedge embed` on real encoded videos (PyAV-written H.264 and MJPEG of Fashion-MNIST images):
each kept frame is an item `SOURCE#t=SECONDS`, embedded as the image it was made from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from video_testing import FPS, N_FRAMES, make_video

from invspread_edge_runtime.cli import create_app, run
from invspread_edge_runtime.embedder import Embedder
from invspread_edge_runtime.embeddings.reader import load_embeddings
from invspread_edge_runtime.sources.frame import Frame, format_time, frame_id, split_frame_id

pytest.importorskip("av")
INVEDGE = Path(sys.executable).parent / "invedge"


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
def model(tiny_export) -> Path:
    return tiny_export / "model.onnx"


def times(n: int, step: int = 1, fps: int = FPS) -> list[float]:
    return [i / fps for i in range(0, n, step)]


def test_a_frame_embeds_as_the_image_it_was_made_from(model, videos, fmnist_frames):
    """Frames of real H.264 and MJPEG files against the PNG-free images themselves: cosine ≥ 0.99."""
    from invspread_edge_runtime.sources.open import open_source
    from invspread_edge_runtime.sources.sampling import Sampling
    from invspread_edge_runtime.sources.spec import parse_source

    with Embedder(model, batch_size=8) as embedder:
        reference = embedder.embed([Image.fromarray(rgb) for rgb in fmnist_frames])
        for name in ("h264.mp4", "mjpeg.avi"):
            with open_source(parse_source(str(videos[name])), Sampling(every=3), name=name) as source:
                batches = list(embedder.embed_frames(source.frames()))
            frames = [f for fs, _ in batches for f in fs]
            vectors = np.concatenate([v for _, v in batches])
            assert [f.index for f in frames] == list(range(0, N_FRAMES, 3))
            cosine = np.sum(vectors * reference[[f.index for f in frames]], axis=1)
            assert cosine.min() >= 0.99, (name, cosine.min())
            # and nearer to that image than to any other of the 50
            assert list(np.argmax(vectors @ reference.T, axis=1)) == [f.index for f in frames], name


def test_embed_frames_keeps_order_and_batches(model, fmnist_frames):
    """Frames built in memory: the same vectors as the images, in order, in batches of the size asked."""
    frames = [Frame(rgb, "mem", i, i / FPS) for i, rgb in enumerate(fmnist_frames[:10])]
    with Embedder(model, batch_size=4) as embedder:
        reference = embedder.embed([Image.fromarray(rgb) for rgb in fmnist_frames[:10]])
        batches = list(embedder.embed_frames(iter(frames)))
        single = list(embedder.embed_frames(iter(frames[:3]), batch_size=1))
    assert [len(fs) for fs, _ in batches] == [4, 4, 2]
    assert [f.index for fs, _ in batches for f in fs] == list(range(10))
    np.testing.assert_allclose(np.concatenate([v for _, v in batches]), reference, atol=1e-5)
    assert [len(fs) for fs, _ in single] == [1, 1, 1]


@pytest.mark.parametrize(
    ("flags", "indices"),
    [
        (["--every", "5"], list(range(0, N_FRAMES, 5))),
        (["--fps", "2"], [0, 13, 25, 38]),  # the first frame at or after each half second (i / 25 s)
        (["--every", "4", "--max-frames", "3"], [0, 4, 8]),
        (["--start", "1", "--end", "0:01.5"], list(range(25, 38))),
    ],
    ids=["every", "fps", "max-frames", "window"],
)
def test_embed_stores_exactly_the_sampled_frames(capsys, tmp_path, model, videos, flags, indices):
    out = tmp_path / "v.emb"
    code, _, err = invedge(capsys, "embed", model, videos["h264.mp4"], "--out", out, *flags)
    assert code == 0, err
    emb = load_embeddings(out)
    expected = [frame_id("h264.mp4", i / FPS) for i in indices]
    assert emb.ids == expected
    assert [emb.frames[i]["index"] for i in emb.ids] == indices
    assert [emb.frames[i]["time"] for i in emb.ids] == pytest.approx([i / FPS for i in indices])
    assert all(emb.frames[i] | {"live": False} == emb.frames[i] for i in emb.ids)
    manifest = emb.manifest
    assert manifest["frames_sha256"] and "frames.json" in os.listdir(out)
    source = manifest["sources"]["h264.mp4"]
    assert source["kind"] == "video" and source["kept"] == len(indices) and source["damage"] is None
    assert "pyav" in source["decoder"]
    assert "reading h264.mp4" in err  # the decoder on the source's first line


def test_a_folder_of_videos_and_images_mixed(capsys, tmp_path, model, videos, fmnist_frames):
    root = tmp_path / "clips"
    (root / "sub").mkdir(parents=True)
    shutil.copy(videos["h264.mp4"], root / "a.mp4")
    shutil.copy(videos["mjpeg.avi"], root / "sub" / "b.avi")
    for i in range(3):
        Image.fromarray(fmnist_frames[i]).save(root / f"img{i}.png")
    out = tmp_path / "mixed.emb"
    code, stdout, err = invedge(capsys, "embed", model, root, "--out", out, "--every", "10", "--json")
    assert code == 0, err
    emb = load_embeddings(out)
    frame_ids = [frame_id(name, i / FPS) for name in ("a.mp4", "sub/b.avi") for i in range(0, N_FRAMES, 10)]
    assert emb.ids == [f"img{i}.png" for i in range(3)] + frame_ids
    assert set(emb.frames) == set(frame_ids)
    report = json.loads(stdout)
    assert set(report["sources"]) == {"a.mp4", "sub/b.avi"} and report["sampling"]["every"] == 10
    # the image made into frame 0 and frame 0 itself land next to each other
    first = emb.ids.index(frame_id("a.mp4", 0.0))
    assert float(np.dot(emb.vectors[0], emb.vectors[first])) >= 0.99


def test_an_image_only_folder_is_as_before(capsys, tmp_path, model, image_folder):
    out = tmp_path / "photos.emb"
    code, _, err = invedge(capsys, "embed", model, image_folder, "--out", out)
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["embeddings.npy", "ids.json", "manifest.json"]
    emb = load_embeddings(out)
    assert emb.frames == {} and "sources" not in emb.manifest and "frames_sha256" not in emb.manifest


def test_a_file_that_is_not_a_video_is_listed_and_the_run_goes_on(capsys, tmp_path, model, videos):
    root = tmp_path / "clips"
    root.mkdir()
    shutil.copy(videos["h264.mp4"], root / "good.mp4")
    (root / "notes.mp4").write_bytes(b"this is not a video at all" * 20)
    out = tmp_path / "v.emb"
    code, _, err = invedge(capsys, "embed", model, root, "--out", out, "--every", "25")
    assert code == 0, err
    emb = load_embeddings(out)
    assert emb.ids == [frame_id("good.mp4", 0.0), frame_id("good.mp4", 1.0)]
    assert [f["id"] for f in emb.failed] == ["notes.mp4"]
    assert "notes.mp4" in err and "Traceback" not in err
    assert emb.manifest["sources"]["notes.mp4"]["error"]


def test_a_damaged_video_keeps_the_frames_before_the_damage(capsys, tmp_path, model, fmnist_frames):
    whole = make_video(tmp_path / "whole.mp4", fmnist_frames, "h264", faststart=True)
    data = whole.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "cut.emb"
    code, _, err = invedge(capsys, "embed", model, tmp_path / "cut.mp4", "--out", out)
    assert code == 0, err
    emb = load_embeddings(out)
    source = emb.manifest["sources"]["cut.mp4"]
    assert 0 < len(emb) < N_FRAMES and source["damage"], source
    assert emb.ids == [frame_id("cut.mp4", i / FPS) for i in range(len(emb))]  # the frames before it
    assert "Traceback" not in err


def test_ray_with_video_sources_is_refused_in_one_line(capsys, tmp_path, model, videos):
    code, _, err = invedge(
        capsys, "embed", model, videos["h264.mp4"], "--out", tmp_path / "r.emb", "--ray", "auto"
    )
    assert code == 1
    assert "video sources run in this process" in err and err.count("error:") == 1


def test_format_time_and_ids():
    assert format_time({"time": 12.48, "live": False}) == "0:12.480"
    assert format_time({"time": 3725.5}) == "1:02:05.500"
    assert format_time({"time": 1_700_000_000.25, "live": True}).startswith("20")
    assert split_frame_id(frame_id("clips/a.mp4", 1.5)) == ("clips/a.mp4", 1.5)


@pytest.mark.skipif(not INVEDGE.exists(), reason="the invedge console script is not installed")
def test_a_killed_run_resumes_without_embedding_again(tmp_path, make_tiny_onnx, fmnist_frames):
    """Killed (os._exit, as kill -9) in the second video: the first video's frames are kept and
    the rerun embeds only the rest."""
    model = make_tiny_onnx(tmp_path / "model" / "model.onnx")
    root = tmp_path / "clips"
    root.mkdir()
    make_video(root / "a.mp4", fmnist_frames, "h264")
    make_video(root / "b.mkv", fmnist_frames, "mjpeg")
    Image.fromarray(fmnist_frames[0]).save(root / "photo.png")
    command = [str(INVEDGE), "embed", str(model), str(root), "--out", str(tmp_path / "v.emb"), "--batch", "8"]
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    # batch 1: the image; 2-8: a.mp4's 50 frames; 9 on: b.mkv
    killed = env | {
        "INVEDGE_TEST_EXIT_AT": "embed-batch:11",
        "INVEDGE_TEST_EXIT_MARKER": str(tmp_path / "exited"),
    }
    first = subprocess.run(command, env=killed, capture_output=True, text=True, timeout=120)
    assert first.returncode == 1 and (tmp_path / "exited").exists(), first.stderr
    assert not (tmp_path / "v.emb" / "manifest.json").exists()
    (root / "a.mp4").write_bytes(b"not a video any more" * 50)  # read to its end: not opened again
    second = subprocess.run(command, env=killed, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    emb = load_embeddings(tmp_path / "v.emb")
    assert emb.manifest["resumed"] == 1 + N_FRAMES  # the image and a.mp4: not embedded again
    assert "resumed: 51 items were already done" in second.stderr
    expected = ["photo.png"] + [frame_id(n, i / FPS) for n in ("a.mp4", "b.mkv") for i in range(N_FRAMES)]
    assert emb.ids == expected and emb.failed == []


def test_the_resume_command_keeps_the_stream_flags():
    from invspread_edge_runtime.commands.embed import resume_command
    from invspread_edge_runtime.commands.options import sampling_from
    from invspread_edge_runtime.embeddings.corpus import EmbedOptions
    from invspread_edge_runtime.sources.open import StreamSettings

    streams = StreamSettings(
        sampling_from(fps=2.5, duration="10m", start="1:30"), reconnect=2, decoder="pyav"
    )
    options = EmbedOptions("m.onnx", ["shop.mp4", "rtsp://cam/x"], "v.emb", streams=streams)
    assert options.images == (Path("shop.mp4"), "rtsp://cam/x")  # a URL keeps its '//'
    assert resume_command(options) == (
        "invedge embed m.onnx shop.mp4 rtsp://cam/x --out v.emb "
        "--fps 2.5 --duration 600 --start 90 --reconnect 2 --decoder pyav"
    )


def test_a_live_stream_is_embedded_and_a_second_run_appends(capsys, tmp_path, model, rtsp_server):
    rtsp_server.ensure_running()
    out = tmp_path / "cam.emb"
    url = rtsp_server.live_url
    code, _, err = invedge(capsys, "embed", model, url, "--out", out, "--max-frames", "4")
    assert code == 0, err
    first = load_embeddings(out)
    assert len(first) == 4 and all(info["live"] and info["source"] == url for info in first.frames.values())
    assert all(item.startswith(f"{url}#t=") for item in first.ids)
    assert first.manifest["sources"][url]["kept"] == 4
    code, _, err = invedge(capsys, "embed", model, url, "--out", out, "--max-frames", "3")
    assert code == 0, err
    second = load_embeddings(out)
    assert second.ids[:4] == first.ids and len(second) == 7  # appended: the first run's frames kept
    assert second.manifest["sources"][url]["kept"] == 7


def test_a_stream_that_never_answers_is_one_line(capsys, tmp_path, model, silent_port):
    url = f"rtsp://127.0.0.1:{silent_port}/x"
    code, _, err = invedge(capsys, "embed", model, url, "--out", tmp_path / "e.emb", "--open-timeout", "1")
    assert code == 1 and err.count("error:") == 1 and "Traceback" not in err, err
    assert url in err


@pytest.mark.skipif(not INVEDGE.exists(), reason="the invedge console script is not installed")
def test_ctrl_c_ends_a_live_source_normally(tmp_path, make_tiny_onnx, rtsp_server):
    """A camera with no --duration runs until Ctrl-C, which saves a finished folder: exit 0."""
    import signal
    import time

    rtsp_server.ensure_running()
    model = make_tiny_onnx(tmp_path / "model" / "model.onnx", image_size=112)
    marker, release = tmp_path / "paused", tmp_path / "release"
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        COLUMNS="200",
        INVEDGE_TEST_PAUSE_AT="embed-batch",
        INVEDGE_TEST_PAUSE_MARKER=str(marker),
        INVEDGE_TEST_PAUSE_RELEASE=str(release),
        INVEDGE_TEST_PAUSE_S="60",
    )
    command = [str(INVEDGE), "embed", str(model), rtsp_server.live_url, "--out", str(tmp_path / "cam.emb")]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGINT)  # in the pause after the first frame was embedded
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, err
    emb = load_embeddings(tmp_path / "cam.emb")
    assert len(emb) >= 1 and all(info["live"] for info in emb.frames.values())


def test_sources_are_refused_before_any_work(capsys, tmp_path, model, videos):
    """--start on a live source, and two endless live sources, are refused before `out` is made."""
    out = tmp_path / "v.emb"
    code, _, err = invedge(capsys, "embed", model, "rtsp://cam/x", "--out", out, "--start", "5")
    assert code == 1 and "--start and --end apply to video files" in err and not out.exists()
    code, _, err = invedge(capsys, "embed", model, "rtsp://cam/a", "rtsp://cam/b", "--out", out)
    assert code == 1 and "2 live sources given" in err and not out.exists()
    assert "Traceback" not in err


def test_files_named_after_a_live_source_are_read_first(videos):
    from invspread_edge_runtime.embeddings.videos import find_inputs

    found = find_inputs(["rtsp://cam/x", str(videos["h264.mp4"]), f"file://{videos['mjpeg.avi']}"])
    assert [v.live for v in found.videos] == [False, False, True]
    assert [v.name for v in found.videos][:2] == ["h264.mp4", "mjpeg.avi"]


def test_a_file_url_folder_is_read(capsys, tmp_path, model, videos):
    root = tmp_path / "clips"
    root.mkdir()
    shutil.copy(videos["h264.mp4"], root / "a.mp4")
    out = tmp_path / "v.emb"
    code, _, err = invedge(capsys, "embed", model, f"file://{root}", "--out", out, "--every", "25")
    assert code == 0, err
    assert load_embeddings(out).ids == [frame_id("a.mp4", 0.0), frame_id("a.mp4", 1.0)]


def test_an_image_url_is_refused_in_one_line(capsys, tmp_path, model):
    code, _, err = invedge(capsys, "embed", model, "https://u:pw@host/photo.jpg", "--out", tmp_path / "v.emb")
    assert code == 1 and "Download it first" in err and "pw" not in err


def test_the_resume_command_leaves_the_password_out():
    from invspread_edge_runtime.commands.embed import resume_command, resume_hint
    from invspread_edge_runtime.embeddings.corpus import EmbedOptions

    options = EmbedOptions("m.onnx", ["rtsp://user:secret@cam/x"], "v.emb")
    assert "secret" not in resume_command(options)
    assert "the password was left out; add it back" in resume_hint(options, "Resume with")
    plain = EmbedOptions("m.onnx", ["rtsp://cam/x"], "v.emb")
    assert resume_hint(plain, "Resume with") == f"Resume with: {resume_command(plain)}"


def test_a_video_that_failed_once_is_resolved_by_its_frames(tmp_path):
    from invspread_edge_runtime.embeddings.writer import EmbeddingWriter

    space = {"space_id": "s", "checkpoint_sha256": "c", "embedding_dim": 2}
    writer = EmbeddingWriter(tmp_path / "e.emb", space=space, model={"sha256": "m"}, root=tmp_path)
    writer.add_failure("clip.mp4", "cannot open clip.mp4")
    writer.add_failure("other.mp4", "cannot open other.mp4")
    writer.add([frame_id("clip.mp4", 0.0)], np.array([[1.0, 0.0]], np.float32))
    manifest = writer.finish()
    assert [f["id"] for f in manifest["failed"]] == ["other.mp4"]


class _Lost:
    """A live source that yields two frames, then loses its stream for good."""

    name, live, decoder, frame_count, frame_rate = "rtsp://cam/x", True, "pyav (h264)", None, None

    def __init__(self, rgb: np.ndarray) -> None:
        from invspread_edge_runtime.sources.frame import SourceStats

        self.rgb, self.stats = rgb, SourceStats()

    def frames(self):
        from invspread_edge_runtime.errors import SourceError

        for index in range(2):
            yield Frame(self.rgb, self.name, index, 1_700_000_000.0 + index, True)
        raise SourceError("rtsp://cam/x: lost (timed out) after 5 reconnects", "Check the camera")

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Damaged(_Lost):
    """A video file (local or on a web server) whose decoding stops after two frames."""

    live = False

    def __init__(self, rgb: np.ndarray, name: str) -> None:
        super().__init__(rgb)
        self.name = name

    def frames(self):
        for index in range(2):
            yield Frame(self.rgb, self.name, index, index / FPS, False)
        self.stats.kept, self.stats.damage = 2, "truncated at 0:00.080"


class _Vectors:
    def embed_frames(self, frames, batch_size=None):
        for frame in frames:
            yield [frame], np.array([[1.0, 0.0]], np.float32)


def test_a_remote_files_damage_is_not_its_end(tmp_path, fmnist_frames, monkeypatch):
    """A local file's damage is met again by a rerun: it is finished; a file on a web server may
    have met the network's: a rerun (or a run that extends the folder) reads it again."""
    import invspread_edge_runtime.sources.open as opening
    from invspread_edge_runtime.embeddings.videos import embed_sources
    from invspread_edge_runtime.sources.open import StreamSettings
    from invspread_edge_runtime.sources.sampling import Sampling
    from invspread_edge_runtime.sources.spec import VideoInput, parse_source

    monkeypatch.setattr(opening, "open_source", lambda spec, *a, name, **k: _Damaged(fmnist_frames[0], name))
    (tmp_path / "local.mp4").write_bytes(b"")
    url = "http://127.0.0.1:9/clip.mp4"
    videos = [
        VideoInput(parse_source(str(tmp_path / "local.mp4")), "local.mp4"),
        VideoInput(parse_source(url), url),
    ]
    out = tmp_path / "v.emb"
    writer = _writer(out, Sampling())
    fields = embed_sources(writer, _Vectors(), videos, StreamSettings())
    assert set(writer.finished) == {"local.mp4"}
    assert fields["sources"][url]["damage"] and fields["sources"][url]["embedded"] == 2
    writer.finish(fields)
    assert set(_writer(out, Sampling(), retry_failed=True).finished) == {"local.mp4"}


def test_a_lost_stream_leaves_a_finished_folder(capsys, tmp_path, model, fmnist_frames, monkeypatch):
    import invspread_edge_runtime.sources.open as opening

    monkeypatch.setattr(opening, "open_source", lambda *a, **k: _Lost(fmnist_frames[0]))
    out = tmp_path / "cam.emb"
    code, _, err = invedge(capsys, "embed", model, "rtsp://cam/x", "--out", out)
    assert code == 1 and "lost" in err and f"saved in {out}" in err and "Traceback" not in err
    emb = load_embeddings(out)  # finished and readable: a rerun appends
    assert len(emb) == 2 and emb.manifest["sources"]["rtsp://cam/x"]["error"].startswith("rtsp://cam/x: lost")


def _clips(root: Path, fmnist_frames: np.ndarray) -> Path:
    root.mkdir()
    make_video(root / "a.mp4", fmnist_frames, "h264")
    make_video(root / "b.mkv", fmnist_frames, "mjpeg")
    return root


def _embed(model: Path, root: Path, out: Path, every: int, events=None, **options):
    from invspread_edge_runtime.embeddings.corpus import EmbedOptions, embed_in_process
    from invspread_edge_runtime.sources.open import StreamSettings
    from invspread_edge_runtime.sources.sampling import Sampling

    streams = StreamSettings(Sampling(every=every))
    return embed_in_process(
        EmbedOptions(model, [root], out, batch=4, streams=streams, **options), events=events
    )


def test_a_resumed_run_opens_no_finished_video_and_embeds_no_frame_twice(
    capsys, tmp_path, model, fmnist_frames
):
    """Ctrl-C in the second video: the rerun never opens the first (made unreadable here) and
    takes the second from its last saved frame; the ids and vectors are an uninterrupted run's."""
    from invspread_edge_runtime.embeddings.corpus import EmbeddingInterrupted
    from invspread_edge_runtime.embeddings.videos import FrameEvents

    root = _clips(tmp_path / "clips", fmnist_frames)
    whole = _embed(model, root, tmp_path / "whole.emb", 2).manifest
    uninterrupted = load_embeddings(tmp_path / "whole.emb")

    def stop_in_b(source, taken: int) -> None:
        if source.name == "b.mkv" and taken >= 12:
            raise KeyboardInterrupt

    out = tmp_path / "v.emb"
    with pytest.raises(EmbeddingInterrupted):
        _embed(model, root, out, 2, FrameEvents(on_frames=stop_in_b))
    # a rerun with another sampling would mix two: refused in one line, before any work
    code, _, err = invedge(capsys, "embed", model, root, "--out", out, "--every", "3")
    assert code == 1 and err.count("error:") == 1 and "holds an unfinished run with another sampling" in err
    assert "Traceback" not in err
    (root / "a.mp4").write_bytes(b"not a video any more" * 50)  # finished: must never be opened again
    opened: list[str] = []
    result = _embed(model, root, out, 2, FrameEvents(on_open=lambda source, video: opened.append(video.name)))
    assert opened == ["b.mkv"]
    emb = load_embeddings(out)
    assert emb.ids == uninterrupted.ids and emb.failed == []
    np.testing.assert_allclose(emb.vectors, uninterrupted.vectors, atol=1e-6)
    assert emb.frames == uninterrupted.frames
    sources = result.manifest["sources"]
    assert sources["a.mp4"] == whole["sources"]["a.mp4"]  # kept from the part that finished it
    # the frames resumed still counted as kept and embedded: the record is an uninterrupted run's...
    assert sources["b.mkv"] == whole["sources"]["b.mkv"] and sources["b.mkv"]["embedded"] == N_FRAMES // 2
    # ...but they were not embedded again: the run's "resumed" counts a.mp4's and b.mkv's saved frames
    assert N_FRAMES // 2 < result.manifest["resumed"] < N_FRAMES


def _writer(out: Path, sampling, retry_failed: bool = False):
    from invspread_edge_runtime.embeddings.writer import EmbeddingWriter

    space = {"space_id": "s", "checkpoint_sha256": "c", "embedding_dim": 2}
    return EmbeddingWriter(
        out,
        space=space,
        model={"sha256": "m"},
        root=out.parent,
        sampling=sampling.selection(),
        retry_failed=retry_failed,
    )


def test_another_max_frames_or_duration_resumes_another_every_is_refused(tmp_path):
    """Only what decides WHICH frames are kept is the resume state: a killed live append rerun
    with another --duration or --max-frames resumes its staged parts, not discards them."""
    from invspread_edge_runtime.embeddings.folder import recover
    from invspread_edge_runtime.embeddings.layout import staging_path
    from invspread_edge_runtime.errors import EmbeddingsError
    from invspread_edge_runtime.sources.sampling import Sampling

    out = tmp_path / "cam.emb"
    url = "rtsp://cam/x"
    first = _writer(out, Sampling(every=10, max_frames=4))
    first.add([frame_id(url, 1.0)], np.array([[1.0, 0.0]], np.float32))
    first.finish({"sampling": Sampling(every=10, max_frames=4).to_dict()})
    # a live append, killed after a part was saved (in the staging folder beside `out`)
    appending = _writer(out, Sampling(every=10, max_frames=3), retry_failed=True)
    appending.add([frame_id(url, 2.0)], np.array([[0.0, 1.0]], np.float32))
    appending.flush()
    assert appending.staged and (staging_path(out) / "parts").is_dir()
    recover(out)
    rerun = _writer(out, Sampling(every=10, duration=60.0), retry_failed=True)
    assert rerun.resumed and frame_id(url, 2.0) in rerun.done_ids  # the staged part is kept
    assert rerun.finish({"sampling": Sampling(every=10, duration=60.0).to_dict()})["count"] == 2
    # an unfinished direct run: another --max-frames resumes, another --every is refused
    fresh = tmp_path / "v.emb"
    killed = _writer(fresh, Sampling(every=10, duration=5.0))
    killed.add([frame_id("a.mp4", 0.0)], np.array([[1.0, 0.0]], np.float32))
    killed.flush()
    assert _writer(fresh, Sampling(every=10, max_frames=7)).resumed
    with pytest.raises(EmbeddingsError, match=r"another sampling \(every 10, now every 5\)"):
        _writer(fresh, Sampling(every=5))
    with pytest.raises(
        EmbeddingsError, match=r"frames taken with another sampling \(every 10, now every 5\)"
    ):
        _writer(out, Sampling(every=5), retry_failed=True)


def test_a_run_cut_short_resumes_with_another_max_frames(capsys, tmp_path, model, fmnist_frames):
    """The command's resume state holds only which frames are kept: the rerun of a run cut
    short, given another --max-frames, takes its saved frames instead of starting over."""
    from invspread_edge_runtime.embeddings.corpus import EmbeddingInterrupted
    from invspread_edge_runtime.embeddings.videos import FrameEvents

    root = tmp_path / "clips"
    root.mkdir()
    make_video(root / "a.mp4", fmnist_frames, "h264")

    def stop(source, taken: int) -> None:
        if taken >= 12:
            raise KeyboardInterrupt

    out = tmp_path / "v.emb"
    with pytest.raises(EmbeddingInterrupted):
        _embed(model, root, out, 2, FrameEvents(on_frames=stop))
    code, _, err = invedge(capsys, "embed", model, root, "--out", out, "--every", "2", "--max-frames", "1000")
    assert code == 0, err
    manifest = load_embeddings(out).manifest
    assert manifest["resumed"] > 0 and manifest["count"] == N_FRAMES // 2


def test_a_resumed_file_converts_no_saved_frame_and_samples_as_before():
    """The sampler sees every frame (the kept ones are an uninterrupted run's), but a frame saved
    before is never converted to RGB nor yielded; it is still counted as kept."""
    from invspread_edge_runtime.sources.reader import FileReader
    from invspread_edge_runtime.sources.sampling import Sampling

    converted: list[int] = []

    def picture(i: int):
        return lambda: converted.append(i) or np.zeros((2, 2, 3), np.uint8)

    decoded = iter([(i / FPS, picture(i)) for i in range(N_FRAMES)])
    with FileReader("f", "test", decoded, Sampling(fps=2), done=lambda time_s: time_s < 1.0) as reader:
        frames = list(reader.frames())
    assert [f.index for f in frames] == [25, 38]  # as `--fps 2` keeps them: 0, 13, 25, 38
    assert converted == [25, 38]
    assert reader.stats.kept == 4 and reader.stats.decoded == N_FRAMES


def test_retry_failed_keeps_the_frames_sources_and_sampling(capsys, tmp_path, model, fmnist_frames):
    root = _clips(tmp_path / "clips", fmnist_frames)
    (root / "b.mkv").unlink()
    Image.fromarray(fmnist_frames[0]).save(root / "good.png")
    (root / "bad.png").write_bytes(b"not a png")
    out = tmp_path / "v.emb"
    code, _, err = invedge(capsys, "embed", model, root, "--out", out, "--every", "10")
    assert code == 0, err
    first = load_embeddings(out).manifest
    assert [f["id"] for f in first["failed"]] == ["bad.png"]
    # another sampling on a folder with frames: refused in one line
    code, _, err = invedge(capsys, "embed", model, root, "--out", out, "--retry-failed", "--every", "5")
    assert code == 1 and err.count("error:") == 1 and "frames taken with another sampling" in err, err
    Image.fromarray(fmnist_frames[1]).save(root / "bad.png")
    # the images alone: the folder's frames, sources and sampling are kept
    code, _, err = invedge(
        capsys, "embed", model, root / "good.png", root / "bad.png", "--out", out, "--retry-failed"
    )
    assert code == 0, err
    emb = load_embeddings(out)
    assert emb.failed == [] and "bad.png" in emb.ids and frame_id("a.mp4", 0.4) in emb.ids
    assert emb.manifest["sources"] == first["sources"] and emb.manifest["sampling"] == first["sampling"]
    # the whole folder again, same sampling: the finished video is not decoded again
    (root / "a.mp4").write_bytes(b"not a video any more" * 50)
    code, _, err = invedge(capsys, "embed", model, root, "--out", out, "--retry-failed", "--every", "10")
    assert code == 0, err
    again = load_embeddings(out)
    assert again.ids == emb.ids and again.failed == [] and again.manifest["sources"] == first["sources"]
