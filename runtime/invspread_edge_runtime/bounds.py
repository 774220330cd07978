"""The allowed range of every size, count and factor the runtime's verbs take, and its one check.

A value past its range is refused before any work, in one line that gives the range
("--batch 100000 is out of range. Use 1 to 1024"): a typo such as 100000 for 1000 must not
become minutes of work, gigabytes of memory, a crash inside faiss or an integer overflow inside
ONNX Runtime. The limits are generous for real use and say in a comment what they protect.
The toolkit's verbs state theirs the same way, beside the options they check
(`invspread_edge.config`, `invspread_edge_export.pipeline`); `invedge serve`'s are here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Bound:
    """The range of one option: low ≤ value ≤ high (low < value where `above`); floats also finite."""

    flag: str
    low: float
    high: float
    zero: str = ""  # what 0 means, where 0 is allowed and special ("all cores")
    above: bool = False  # `low` itself is excluded (a duration, a rate)

    def check(self, value: float) -> None:
        """ConfigError naming the flag, the value and the allowed range; nothing for a value inside."""
        if isinstance(value, float) and math.isnan(value):
            raise ConfigError(f"{self.flag} nan is not a number", f"Use {self.allowed}")
        if not self.contains(value):
            raise ConfigError(f"{self.flag} {_shown(value)} is out of range", f"Use {self.allowed}")

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (value > self.low if self.above else value >= self.low) and value <= self.high

    @property
    def allowed(self) -> str:
        """'8 to 1024', 'a number above 0 and at most 100', '0 to 1024 (0: all cores)'."""
        if self.above:
            text = f"a number above {_shown(self.low)} and at most {_shown(self.high)}"
        else:
            text = f"{_shown(self.low)} to {_shown(self.high)}"
        return f"{text} ({'0: ' + self.zero})" if self.zero else text

    @property
    def help(self) -> str:
        """The range for --help: '[8 ≤ x ≤ 1024]', '[0 < x ≤ 100]'."""
        return f"[{_shown(self.low)} {'<' if self.above else '≤'} x ≤ {_shown(self.high)}]"


def check_bounds(bounds: dict[str, Bound], values: dict[str, Any]) -> None:
    """ConfigError for the first value out of its bound (None: not given, the default applies; a
    list: each of its values); `bounds`: a field or argument name → its flag's range."""
    for name, bound in bounds.items():
        value = values.get(name)
        for each in value if isinstance(value, list) else [] if value is None else [value]:
            bound.check(each)


def _shown(value: float) -> str:
    """1024 → '1024', 1e308 → '1e+308', 0.5 → '0.5', 2**32 - 1 → '4294967295'."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)


def helped(text: str, bound: Bound) -> str:
    """An option's help text with its range after it (what --help shows)."""
    return f"{text} {bound.help}"


# --- the runtime's verbs --------------------------------------------------------------------------
# inference threads: ONNX Runtime and faiss take a C int; no machine has more cores than this
THREADS = Bound("--threads", 0, 1024, zero="all cores")
# images per inference call (embed --batch, bench --batch, engines' --min/--opt/--max-batch, serve
# --max-batch): at a 1024 px model input one batch of 1024 is already 12 GB of float32
BATCH = Bound("--batch", 1, 1024)
ENGINE_MIN_BATCH = Bound("--min-batch", 1, BATCH.high)
ENGINE_OPT_BATCH = Bound("--opt-batch", 1, BATCH.high)
ENGINE_MAX_BATCH = Bound("--max-batch", 1, BATCH.high)
WORKSPACE_MB = Bound("--workspace-mb", 1, 262_144)  # TensorRT's scratch memory: at most 256 GiB
# the DLA core an engine is built for (--dla): NVIDIA's Orin and Xavier SoCs have at most two DLA
# cores (NVIDIA's DLA software overview: "up to two"; Orin Nano and Thor have none). Whether this
# device has the core is asked of TensorRT at build and at load (tensorrt/api.py).
DLA_CORE = Bound("--dla", 0, 1)
# neighbours per query (search --k, serve --k-max); a gallery smaller than k is refused separately
K = Bound("--k", 1, 10_000)
# faiss/Milvus approximate indexes: Milvus' own ranges (nlist, nprobe ≤ 65536); HNSW with one link
# per node crashes faiss, and each link costs 8 bytes per item (M = 256: 2 KB per item)
NLIST = Bound("--nlist", 1, 65_536)
NPROBE = Bound("--nprobe", 1, 65_536)
HNSW_M = Bound("--m", 2, 256)
EF_SEARCH = Bound("--ef-search", 1, 32_768)
# bench: images kept decoded in memory (photos reduced to a 1024 px side: ~3 MB each)
BENCH_IMAGES = Bound("--images", 2, 10_000)
BENCH_ITERS = Bound("--iters", 1, 1_000_000)
BENCH_SECONDS = Bound("--seconds", 0, 3600, above=True)  # per row: an hour at most
WARMUP_CALLS = Bound("--warmup", 0, 100_000)
WARMUP_SECONDS = Bound("--warmup duration", 0, 3600)  # seconds
# embed --ray: actors of one job, and GPUs each holds (a fraction shares a GPU; a node has ≤ 16)
RAY_ACTORS = Bound("--ray-actors", 1, 4096)
RAY_GPUS_PER_ACTOR = Bound("--ray-gpus-per-actor", 0, 16, zero="CPU actors")
# class ids of --classes (train, eval): ImageNet-21k has 21 841 classes; a range of them is a list
CLASS_ID = Bound("--classes", 0, 99_999)
# video and camera sources (sources/sampling.py, the stream options of embed, search, watch, serve)
EVERY = Bound("--every", 1, 1_000_000)
FPS = Bound("--fps", 0, 1000, above=True)  # of video time; no camera delivers more
MAX_FRAMES = Bound("--max-frames", 1, 100_000_000)  # kept frames of one source
DURATION = Bound("--duration", 0, 30 * 24 * 3600, above=True)  # seconds: 30 days of a camera
START = Bound("--start", 0, 100 * 24 * 3600)  # seconds into a file
END = Bound("--end", 0, 100 * 24 * 3600, above=True)
OPEN_TIMEOUT = Bound("--open-timeout", 0, 600, above=True)  # seconds to open a stream or camera
RECONNECT = Bound("--reconnect", 0, 1000, zero="never")  # consecutive reconnect tries of a live source
# invedge watch and serve --watch (watch/matcher.py)
THRESHOLD = Bound("--threshold", -1, 1)  # a cosine score: unit vectors never leave -1..1
COOLDOWN = Bound("--cooldown", 0, 24 * 3600, zero="every frame")  # seconds of frame time per gallery item
WATCH_K = Bound("--k", 1, 100)  # gallery items reported per frame: a match line each

# invedge serve (serve/settings.py checks them)
PORT = Bound("--port", 0, 65_535, zero="any free port")
SERVE_MAX_BATCH = Bound("--max-batch", 1, BATCH.high)
MAX_WAIT_MS = Bound("--max-wait-ms", 0, 1000, above=True)  # batching: a wait past 1 s is an outage
QUEUE = Bound("--queue", 1, 16_384)  # images waiting, each a preprocessed input in memory
MAX_UPLOAD_MB = Bound("--max-upload-mb", 0, 1024, above=True)  # a request body held in memory
MAX_PIXELS = Bound("--max-pixels", 1, 200_000_000)  # one decoded image: 200 MP is 600 MB of RGB
DEFAULT_MAX_PIXELS = 40_000_000  # one decoded image by default (serve, Triton's preprocessing): 120 MB of RGB
DECODE_THREADS = Bound("--decode-threads", 1, 64)  # each may hold a --max-pixels image
K_MAX = Bound("--k-max", 1, K.high)
READ_TIMEOUT_S = Bound("--read-timeout", 0, 3600, above=True)

# invedge deploy triton (deploy/triton): the batch Triton forms, how long a request may wait for one
# (past 1 s is an outage, as for serve), model instances (each a process or a session in memory)
TRITON_MAX_BATCH = Bound("--max-batch", 1, BATCH.high)
TRITON_PREFERRED_BATCH = Bound("--preferred-batch", 1, BATCH.high)
TRITON_QUEUE_DELAY_US = Bound("--queue-delay-us", 0, 1_000_000)
TRITON_INSTANCES = Bound("--instances", 1, 64)
TRITON_THREADS = Bound("--threads", 0, THREADS.high, zero="ONNX Runtime's default")

# invedge deploy deepstream (deploy/deepstream): nvinfer's batch of objects, and its ids (guint in
# nvinfer; no pipeline has thousands of GIEs or GPUs, and detectors' class ids stay far below 100 000)
DS_BATCH = Bound("--batch-size", 1, BATCH.high)
DS_GPU_ID = Bound("--gpu-id", 0, 63)
DS_GIE_ID = Bound("--gie-id", 1, 65_535)
DS_OPERATE_ON_GIE_ID = Bound("--operate-on-gie-id", 1, 65_535)
DS_CLASS_ID = Bound("--operate-on-class-ids", 0, 99_999)

# dedup, cluster, map, select, outliers (explore/)
DUP_THRESHOLD = Bound("--threshold", 0, 1)  # a cosine score; below 0 nothing is a duplicate of anything
EXPLORE_NEIGHBOURS = Bound("--neighbours", 1, 1000)  # per item, held in memory: N × this × 12 bytes
CLUSTER_K = Bound("--k", 2, 100_000)  # k-means centroids: k × d floats, and k contact sheets
CLUSTER_K_MAX = Bound("--k-max", 3, 1000)  # --k auto tries 2..this: one k-means per value
SILHOUETTE_SAMPLE = Bound("--sample", 100, 100_000)  # --k auto: one k-means per k tried on this many items
MIN_CLUSTER_SIZE = Bound("--min-cluster-size", 2, 1_000_000)
CLUSTER_NITER = Bound("--niter", 1, 1000)  # k-means iterations: each one pass over the training rows
PER_SHEET = Bound("--per-sheet", 1, 1000)  # images on one contact sheet: each a file read and drawn
EXPLORE_SEED = Bound("--seed", 0, 2**31 - 1)  # faiss takes a C int
SELECT_COUNT = Bound("--count", 1, 10_000_000)  # greedy k-center: one pass over N per pick
EXCLUDE_DUPLICATES = Bound("--exclude-duplicates", 0, 1)  # a cosine, as --threshold
OUTLIER_COUNT = Bound("--count", 1, 1_000_000)
THUMB_PX = Bound("--thumb", 16, 512)  # a thumbnail's side in pixels, in pictures and pages
MAP_THUMBS = Bound("--thumbs", 0, 100_000)  # images drawn or embedded in a map: each a file read
# items of a gallery (not options): past these the work or the output outgrows its use
# a page's embedded JSON: ~150 bytes per item, parsed by a browser
MAP_PAGE_ITEMS = Bound("--html", 1, 200_000)
HDBSCAN_ITEMS = Bound("--method hdbscan", 1, 200_000)  # scikit-learn's HDBSCAN: hours and N × k memory beyond
