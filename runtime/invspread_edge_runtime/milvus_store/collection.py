"""A gallery's collection: schema, index kinds and their parameters, and the properties that make it ours.

Schema: `id` VARCHAR primary key (our ids, auto_id off), `vector` FLOAT_VECTOR(dim), `location`
VARCHAR (the image file, "" when unknown); metric IP (our vectors are unit length, so cosine).
Kinds: flat → FLAT (exact), hnsw → HNSW (M, efConstruction; search ef), ivf → IVF_FLAT (nlist;
search nprobe). What the file index keeps in its header lives in the collection's properties
(strings): the format marker, the embedding space, the model, kind, params and recall@10. A
collection without the marker was not made by invedge and is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, IndexFileError
from ..index.settings import EF_SEARCH
from .address import StoreAddress

FORMAT = "invedge-milvus-1"
ID_MAX_BYTES = 1024  # Milvus VARCHAR max_length (bytes of UTF-8)
LOCATION_MAX_BYTES = 4096
INDEX_TYPES = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT"}
BUILD_PARAMS = {"flat": (), "hnsw": ("m", "ef_construction"), "ivf": ("nlist",)}  # define the collection
EF_MAX = 32768  # Milvus' largest HNSW search ef
# How fresh a search or count must be (Milvus' consistency levels). strong: every write acknowledged
# before it, by any process, is seen; it waits for the server's next time tick (proxy.timeTickInterval,
# 200 ms by default). session: this process's own writes; bounded: writes older than the server's
# graceful time (common.gracefulTime, 5 s by default); eventually: no wait at all.
CONSISTENCY = {"strong": "Strong", "session": "Session", "bounded": "Bounded", "eventually": "Eventually"}
_KEYS = ("format", "space", "model", "kind", "params", "recall_at_10")


@dataclass
class Meta:
    """What the collection's properties record (the file index's header, in Milvus)."""

    kind: str
    params: dict[str, Any]
    space: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)
    recall_at_10: float | None = None

    @property
    def space_id(self) -> str:
        return str(self.space.get("space_id", ""))

    @property
    def build_params(self) -> dict[str, Any]:
        return {name: self.params.get(name) for name in BUILD_PARAMS[self.kind]}

    def properties(self) -> dict[str, str]:
        values = {"format": FORMAT, "space": self.space, "model": self.model, "kind": self.kind}
        values |= {"params": self.params, "recall_at_10": self.recall_at_10}
        return {
            f"invedge.{key}": value if isinstance(value, str) else json.dumps(value)
            for key, value in values.items()
        }


def read_meta(description: dict[str, Any], store: StoreAddress, collection: str) -> tuple[Meta, int]:
    """The Meta and vector dimension of a described collection; IndexFileError unless invedge made it."""
    props = description.get("properties") or {}
    fields = {f.get("name"): f for f in description.get("fields") or []}
    foreign = IndexFileError(
        f"collection {collection} in {store.shown} was not made by invedge (no invedge properties)",
        "Choose another --collection, or build one with 'invedge index build EMB --store ... --collection ...'",
    )
    if props.get("invedge.format") != FORMAT or "vector" not in fields or "id" not in fields:
        raise foreign
    try:
        values = {key: props[f"invedge.{key}"] for key in _KEYS}
        meta = Meta(
            kind=values["kind"],
            params=json.loads(values["params"]),
            space=json.loads(values["space"]),
            model=json.loads(values["model"]),
            recall_at_10=json.loads(values["recall_at_10"]),
        )
        dim = int((fields["vector"].get("params") or {})["dim"])
    except (KeyError, ValueError, TypeError) as exc:
        raise foreign from exc
    if meta.kind not in INDEX_TYPES:
        raise foreign
    return meta, dim


def schema(pymilvus: Any, client: Any, dim: int) -> Any:
    DataType = pymilvus.DataType
    made = client.create_schema(auto_id=False, enable_dynamic_field=False)
    made.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
    made.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    made.add_field("location", DataType.VARCHAR, max_length=LOCATION_MAX_BYTES)
    return made


def index_params(client: Any, meta: Meta) -> Any:
    """The vector index of `meta.kind`, with its build parameters.

    Sent twice: flat (the keys Milvus 2.4+ reads) and as the JSON "params" (what Milvus Lite 3
    reads; Milvus accepts it too), so both engines build the same index.
    """
    build = {
        "hnsw": {"M": meta.params.get("m"), "efConstruction": meta.params.get("ef_construction")},
        "ivf": {"nlist": meta.params.get("nlist")},
    }.get(meta.kind, {})
    made = client.prepare_index_params()
    made.add_index(
        "vector",
        index_type=INDEX_TYPES[meta.kind],
        metric_type="IP",
        params={**build, "params": build} if build else {},
    )
    return made


def search_params(kind: str, params: dict[str, Any], k: int, exact: bool, count: int) -> dict[str, Any]:
    """Milvus search parameters: HNSW ef (≥ k, as Milvus requires), IVF nprobe (all lists when exact)."""
    if kind == "hnsw":
        ef = int(params.get("ef_search") or EF_SEARCH)
        ef = min(EF_MAX, max(ef, k, count if exact else 0))  # exact: every node in reach
        return {"metric_type": "IP", "params": {"ef": ef}}
    if kind == "ivf":
        nprobe = int(params.get("nlist", 1)) if exact else int(params.get("nprobe") or 1)
        return {"metric_type": "IP", "params": {"nprobe": nprobe}}
    return {"metric_type": "IP", "params": {}}


def check_fits(ids: list[str], locations: list[str] | None) -> None:
    """Ids and image paths longer than the schema holds: one error before anything is written."""
    for values, limit, what, hint in (
        (ids, ID_MAX_BYTES, "id", "Use shorter ids (embed from a folder nearer the images)"),
        (locations or [], LOCATION_MAX_BYTES, "image path", "Move the images to a shorter path"),
    ):
        long = [value for value in values if len(value.encode("utf-8")) > limit]
        if long:
            raise IndexFileError(
                f"{len(long)} {what}{'s' * (len(long) != 1)} longer than the {limit} bytes a Milvus "
                f"gallery holds: {long[0][:60]}…",
                hint,
            )


def consistency_level(name: str) -> str:
    """Milvus' name of the consistency level `name` (strong, session, bounded, eventually)."""
    level = CONSISTENCY.get(name.strip().lower())
    if level is None:
        raise ConfigError(
            f"--consistency {name!r} is not a Milvus consistency level",
            f"Use one of {', '.join(CONSISTENCY)} (strong: every replica's writes at once)",
        )
    return level
