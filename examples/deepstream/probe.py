"""Each tracked object's invedge embedding, read from a DeepStream pipeline into an invedge gallery.

NOT RUN: pyds (DeepStream's Python bindings) cannot be installed where this was written. The parts
that do not need DeepStream (`unit_vector`, `object_id`, `layer_values` on a stand-in for pyds,
`GalleryProbe`, `MetaWatch`) are tested in tests/runtime/deploy/test_deepstream.py; the pad probe
and the pipeline follow the DeepStream Python bindings' documented calls (NvDsBatchMeta →
NvDsFrameMeta → NvDsObjectMeta → NvDsUserMeta of type NVDSINFER_TENSOR_OUTPUT_META →
NvDsInferTensorMeta → get_nvds_LayerInfo) and deepstream_python_apps' uridecodebin linking.

Pipeline: uridecodebin → nvstreammux → nvinfer (detector, PGIE) → nvtracker → nvinfer (our SGIE, the
config `invedge deploy deepstream` wrote) → [this probe on the SGIE's src pad] → fakesink. Run:

    python3 probe.py DEEPSTREAM_DIR GALLERY.index --mode add|search --pgie PGIE_CONFIG URI

An object's id is `[PREFIX/]<source id>/<tracker id>`: nvinfer infers a tracked object again when
its box grows or every `secondary-reinfer-interval` frames, and `--mode add` keeps the first
embedding of each track (later ones of the same id are skipped, not added again nor updated).
Objects without a tracker id are searched but never added. `--mode search` prints each object's
best gallery match.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from invspread_edge_runtime.deploy.deepstream import CONFIG_NAME, MANIFEST, read_manifest
from invspread_edge_runtime.errors import InvedgeError
from invspread_edge_runtime.gallery import Gallery

BINDINGS_HINT = (
    "On the DeepStream machine: apt install python3-gi python3-gst-1.0, then pip install the pyds wheel "
    "of your DeepStream release (github.com/NVIDIA-AI-IOT/deepstream_python_apps, Releases); "
    "in a virtual environment, make it with --system-site-packages so it sees gi"
)
UNTRACKED_OBJECT_ID = 0xFFFFFFFFFFFFFFFF  # NvDsObjectMeta.object_id with no tracker upstream (nvdsmeta.h)
UNTRACKED = "untracked"  # in the id of such an object: searched, never added
WATCH_BATCHES = 100  # batches with objects but none of our tensor meta before the probe warns


class ProbeError(RuntimeError):
    """What stops the probe: one line for the user."""


def unit_vector(values: np.ndarray, dim: int) -> np.ndarray | None:
    """One object's output layer (its `dim` float32 values) as a float32 unit vector; None when it is
    not `dim` long, not finite or all zero (nothing to compare with a cosine)."""
    vector = np.asarray(values, dtype=np.float32).reshape(-1)
    if vector.size != dim or not np.isfinite(vector).all():
        return None
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if norm == 0.0:
        return None
    return (vector / np.float32(norm)).astype(np.float32)  # a copy: nvinfer recycles its buffer


def object_id(source_id: int, tracker_id: int, frame_num: int, index: int, prefix: str = "") -> str:
    """`[prefix/]<source>/<tracker id>`: one id per track, so a re-inferred object is the same item.
    Without a tracker id the object gets a per-frame id marked UNTRACKED."""
    head = f"{prefix}/" if prefix else ""
    if tracker_id == UNTRACKED_OBJECT_ID:
        return f"{head}{source_id}/{UNTRACKED}/{frame_num}/{index}"
    return f"{head}{source_id}/{tracker_id}"


def layer_values(pyds: Any, layer: Any) -> np.ndarray:
    """A copy of one output layer's values as float32 (the buffer is reused after the probe).
    nvinfer gives FLOAT for our graphs (TensorRT keeps the network's FP32 output unless the config
    sets output-io-formats); HALF, from a config that does, is widened; anything else is an error."""
    count = int(layer.inferDims.numElements)
    kinds = {pyds.NvDsInferDataType.FLOAT: (ctypes.c_float, np.float32)}
    kinds[pyds.NvDsInferDataType.HALF] = (ctypes.c_uint16, np.float16)
    if layer.dataType not in kinds:
        raise ProbeError(
            f"output layer {layer.layerName!r} is of type {layer.dataType}, not FLOAT or HALF: "
            "remove output-io-formats from the SGIE config"
        )
    ctype, dtype = kinds[layer.dataType]
    pointer = ctypes.cast(pyds.get_ptr(layer.buffer), ctypes.POINTER(ctype))
    raw = np.ctypeslib.as_array(pointer, shape=(count,))
    return raw.view(dtype).astype(np.float32)  # astype copies


@dataclass
class Match:
    object_id: str
    gallery_id: str
    score: float


@dataclass
class GalleryProbe:
    """What the pad probe does with the embeddings of one batch, on any invedge gallery."""

    gallery: Gallery
    space_id: str  # the embedding space of the SGIE's model (its invedge-deepstream.json)
    dim: int
    mode: str = "search"  # "add" or "search"
    seen: set[str] = field(default_factory=set)  # ids added by this probe (a track once)

    def handle(self, objects: list[tuple[str, np.ndarray]]) -> list[Match]:
        """(object id, output layer) pairs → added to the gallery (mode add: the first embedding of
        each id; an id the gallery holds, or untracked, is skipped) or searched (the best match of each)."""
        kept = [(oid, v) for oid, raw in objects if (v := unit_vector(raw, self.dim)) is not None]
        if not kept:
            return []
        if self.mode == "add":
            self._add(kept)
            return []
        if not len(self.gallery):
            return []
        result = self.gallery.search(np.stack([v for _, v in kept]), k=1, space_id=self.space_id)
        return [
            Match(oid, row[0], float(scores[0]))
            for (oid, _), row, scores in zip(kept, result.ids, result.scores, strict=True)
        ]

    def _add(self, kept: list[tuple[str, np.ndarray]]) -> None:
        held = self.gallery.contains([oid for oid, _ in kept]) | self.seen
        new: dict[str, np.ndarray] = {}
        for oid, vector in kept:  # one id twice in a batch: its first
            if oid not in held and oid not in new and f"/{UNTRACKED}/" not in oid:
                new[oid] = vector
        if new:
            self.gallery.add(
                np.stack(list(new.values())), list(new), self.space_id, source="DeepStream objects"
            )
            self.seen.update(new)


@dataclass
class MetaWatch:
    """Warns once when objects arrive but none carries tensor meta of our gie-unique-id: deepstream-app's
    [secondary-gie*] group sets gie-unique-id over the config file's (then pass --gie-id)."""

    gie_id: int
    batches: int = 0
    other_ids: set[int] = field(default_factory=set)
    warned: bool = False

    def saw(self, found: int, objects: int, unique_ids: set[int]) -> str | None:
        """After a batch: `found` embeddings of ours among `objects` objects carrying tensor meta of
        `unique_ids`. Returns the warning, once."""
        if found:
            self.batches = -1  # ours arrived: never warn
        if self.batches < 0 or not objects or self.warned:
            return None
        self.batches += 1
        self.other_ids |= unique_ids - {self.gie_id}
        if self.batches < WATCH_BATCHES:
            return None
        self.warned = True
        others = ", ".join(map(str, sorted(self.other_ids))) or "none"
        return (
            f"warning: {self.batches} batches of objects and no tensor meta of gie-unique-id {self.gie_id} "
            f"(tensor meta of ids: {others}); if your pipeline config sets the SGIE's gie-unique-id, pass --gie-id"
        )


def new_gallery(manifest: dict[str, Any]) -> Any:
    """An empty exact index in the SGIE model's embedding space (for `--mode add` without an index yet)."""
    from invspread_edge_runtime.index.gallery import Index

    dim = int(manifest["embedding_dim"])
    space = {
        "space_id": manifest["space_id"],
        "checkpoint_sha256": manifest["checkpoint_sha256"],
        "embedding_dim": dim,
    }
    return Index(np.zeros((0, dim), dtype=np.float32), [], space, model={"path": manifest["source"]})


# --- DeepStream (needs pyds and GStreamer's Python bindings) -----------------------------------------


def object_embeddings(
    pyds: Any, gst_buffer: Any, gie_id: int, layer_name: str, prefix: str = ""
) -> tuple[list[tuple[str, np.ndarray]], int, set[int]]:
    """(object id, output values) of every object our SGIE (gie-unique-id `gie_id`) embedded in a
    batch; also how many objects there were and the unique ids of all tensor meta seen (MetaWatch)."""
    found: list[tuple[str, np.ndarray]] = []
    objects, unique_ids = 0, set()
    batch_meta = pyds.gst_buffer_get_nvds_batch_meta(hash(gst_buffer))
    l_frame = batch_meta.frame_meta_list
    while l_frame is not None:
        frame_meta = pyds.NvDsFrameMeta.cast(l_frame.data)
        l_obj = frame_meta.obj_meta_list
        while l_obj is not None:
            obj_meta = pyds.NvDsObjectMeta.cast(l_obj.data)
            objects += 1
            l_user = obj_meta.obj_user_meta_list
            while l_user is not None:
                user_meta = pyds.NvDsUserMeta.cast(l_user.data)
                if user_meta.base_meta.meta_type == pyds.NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META:
                    tensor_meta = pyds.NvDsInferTensorMeta.cast(user_meta.user_meta_data)
                    unique_ids.add(int(tensor_meta.unique_id))
                    values = (
                        _layer(pyds, tensor_meta, layer_name) if tensor_meta.unique_id == gie_id else None
                    )
                    if values is not None:
                        oid = object_id(
                            frame_meta.source_id, obj_meta.object_id, frame_meta.frame_num, objects, prefix
                        )
                        found.append((oid, values))
                l_user = l_user.next
            l_obj = l_obj.next
        l_frame = l_frame.next
    return found, objects, unique_ids


def _layer(pyds: Any, tensor_meta: Any, name: str) -> np.ndarray | None:
    for index in range(tensor_meta.num_output_layers):
        layer = pyds.get_nvds_LayerInfo(tensor_meta, index)
        if layer.layerName == name:
            return layer_values(pyds, layer)
    return None


def build_pipeline(Gst: Any, uri: str, pgie: Path, sgie: Path) -> Any:
    """uridecodebin → nvstreammux → PGIE → nvtracker → our SGIE (named "sgie") → fakesink. The
    decoder's pads appear once the stream is typed: only a video pad in NVMM memory (NVIDIA's
    decoder) is linked, as deepstream_python_apps do; another one is an error on the bus."""
    pipeline = Gst.parse_launch(
        "nvstreammux name=m batch-size=1 width=1280 height=720 batched-push-timeout=40000 "
        f"! nvinfer config-file-path={pgie} ! nvtracker ll-lib-file="
        "/opt/nvidia/deepstream/deepstream/lib/libnvds_nvmultiobjecttracker.so "
        f"! nvinfer name=sgie config-file-path={sgie} ! fakesink"
    )
    source = Gst.ElementFactory.make("uridecodebin", "source")
    source.set_property("uri", uri)
    pipeline.add(source)
    mux = pipeline.get_by_name("m")

    def on_pad_added(_decodebin: Any, pad: Any) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        if not caps.get_structure(0).get_name().startswith("video"):
            return  # audio and others: not linked
        if not caps.get_features(0).contains("memory:NVMM"):
            print(
                "error: the decoder is not NVIDIA's (no NVMM memory): check the DeepStream install",
                file=sys.stderr,
            )
            return
        sink = (
            mux.request_pad_simple("sink_0")
            if hasattr(mux, "request_pad_simple")
            else mux.get_request_pad("sink_0")
        )
        if pad.link(sink) != Gst.PadLinkReturn.OK:
            print("error: cannot link the decoder to nvstreammux", file=sys.stderr)

    source.connect("pad-added", on_pad_added)
    return pipeline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("deepstream_dir", type=Path, help="the folder 'invedge deploy deepstream' wrote")
    parser.add_argument("gallery", type=Path, help="an invedge index file (--mode add makes it when missing)")
    parser.add_argument("--mode", choices=("add", "search"), default="search")
    parser.add_argument("--pgie", type=Path, required=True, help="the detector's nvinfer config")
    parser.add_argument(
        "--gie-id",
        type=int,
        default=None,
        help="the SGIE's gie-unique-id when your pipeline config overrides it",
    )
    parser.add_argument(
        "--id-prefix",
        default="",
        help="put before each object id (e.g. the video's name), so tracks of runs differ",
    )
    parser.add_argument("uri", help="a video URI, e.g. file:///path/video.mp4 or rtsp://...")
    return parser.parse_args(argv)


def check_arguments(args: argparse.Namespace) -> tuple[dict[str, Any], Gallery]:
    """(the SGIE folder's manifest, the gallery) once every argument is right, checked before
    DeepStream is needed: ProbeError names the first wrong one."""
    from invspread_edge_runtime.index.gallery import Index

    folder = args.deepstream_dir
    if not (folder / MANIFEST).is_file():
        raise ProbeError(
            f"{folder} holds no {MANIFEST}: it is not a folder 'invedge deploy deepstream' wrote. "
            "Pass that folder (invedge deploy deepstream EXPORT --out DIR writes one)"
        )
    if not args.pgie.is_file():
        raise ProbeError(f"--pgie {args.pgie}: no such file. Pass the detector's nvinfer config file")
    try:
        manifest = read_manifest(folder)
        if args.gallery.exists() or args.mode == "search":
            gallery = Index.load(args.gallery)
            if args.mode == "add":  # the objects would join items of another embedding space
                gallery.check_space(manifest["space_id"], adding=str(folder))
            else:
                gallery.check_space(manifest["space_id"], model=f"the SGIE model of {folder}")
            return manifest, gallery
    except InvedgeError as exc:
        raise ProbeError(str(exc)) from exc
    if not args.gallery.parent.is_dir():
        raise ProbeError(
            f"cannot write the new gallery {args.gallery}: its folder {args.gallery.parent} does not exist. "
            "Create it, or name an index file in an existing folder"
        )
    return manifest, new_gallery(manifest)


def import_bindings() -> tuple[Any, Any, Any]:
    """(Gst, GLib, pyds): DeepStream's Python bindings, or ProbeError saying how to get them."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import GLib, Gst  # noqa: I001 (pyds after Gst, as deepstream_python_apps do)

        import pyds
    except (ImportError, ValueError) as exc:  # ValueError: gi without GStreamer's typelib
        raise ProbeError(
            f"the probe needs DeepStream's Python bindings, gi (with Gst 1.0) and pyds ({exc}). {BINDINGS_HINT}"
        ) from exc
    return Gst, GLib, pyds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        manifest, gallery = check_arguments(args)
        Gst, GLib, pyds = import_bindings()
    except ProbeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return run_pipeline(args, manifest, gallery, Gst, GLib, pyds)


def run_pipeline(
    args: argparse.Namespace, manifest: dict[str, Any], gallery: Gallery, Gst: Any, GLib: Any, pyds: Any
) -> int:
    """The pipeline until the video ends: each batch's embeddings added to or searched in `gallery`."""
    probe = GalleryProbe(gallery, manifest["space_id"], manifest["embedding_dim"], args.mode)
    gie_id = manifest["gie_unique_id"] if args.gie_id is None else args.gie_id
    watch = MetaWatch(gie_id)
    failed: list[str] = []

    Gst.init(None)
    pipeline = build_pipeline(Gst, args.uri, args.pgie, args.deepstream_dir / CONFIG_NAME)
    loop = GLib.MainLoop()

    def on_buffer(_pad: Any, info: Any, _data: Any) -> Any:
        try:
            objects, count, unique_ids = object_embeddings(
                pyds, info.get_buffer(), gie_id, manifest["output_name"], args.id_prefix
            )
        except ProbeError as exc:
            failed.append(str(exc))
            loop.quit()
            return Gst.PadProbeReturn.REMOVE
        warning = watch.saw(len(objects), count, unique_ids)
        if warning:
            print(warning, file=sys.stderr)
        for match in probe.handle(objects):
            print(f"{match.object_id}\t{match.gallery_id}\t{match.score:.4f}")
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sgie").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, on_buffer, None)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message::eos", lambda *_: loop.quit())
    bus.connect("message::error", lambda _bus, msg: (print(msg.parse_error(), file=sys.stderr), loop.quit()))
    pipeline.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    finally:
        pipeline.set_state(Gst.State.NULL)
    if failed:
        print(f"error: {failed[0]}", file=sys.stderr)
        return 1
    if args.mode == "add":
        gallery.save(args.gallery)
        print(f"added {len(probe.seen)} objects; {args.gallery} holds {len(gallery)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
