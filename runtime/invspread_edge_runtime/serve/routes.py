"""The endpoints: health, metrics, info, embed, search, gallery changes and the --watch source's matches
(the contract: docs/SERVE_API.md).

Each endpoint reads its input within the limits (uploads.py), decodes images in the decode pool,
embeds them through the batcher and answers JSON (embed and search: answers.py; embed also raw
float32 on request); every refusal is a ServeError (errors.py).
Blocking work (a search, a file write under the lock) runs in a worker thread, never on the loop.
The POST endpoints (`FAST`) take only the request, read their query parameters themselves and
answer a Response: lane.py calls them without FastAPI's routing and dependency resolution.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..backends.base import l2_normalize
from ..backends.triton import shown
from ..index.settings import DEFAULT_K
from ..version import __version__
from .answers import BINARY, FastJSON, embeddings_answer
from .errors import ServeError, starting
from .files import NotServed, ServedImage
from .images import check_pixels, decode, decode_checked
from .metrics import CONTENT_TYPE
from .service import Service
from .uploads import Upload, max_images, read_images, read_json

ID_PATTERN = re.compile(r"[^\x00-\x1f\x7f]{1,256}")  # printable, 1..256 characters
WHOLE_NUMBER = re.compile(r"[+-]?[0-9]{1,12}")
# A request's images decoded on the event loop when this small (in bytes, then in pixels): less work
# than the hops to a decode thread and back; anything larger is decoded in the decode pool.
INLINE_BYTES = 64 * 1024
INLINE_PIXELS = 128 * 128


def service_of(request: Request) -> Service:
    """The running service (the token, if any, was checked by auth.Guard); 503 while it is starting."""
    service: Service | None = request.app.state.service
    if service is None:
        raise starting()
    return service


async def running(request: Request) -> Service:
    """`service_of` as a dependency: async, so FastAPI calls it on the loop (no thread hop)."""
    return service_of(request)


router = APIRouter()
Running = Depends(running)
EMBED_ANSWERS = {200: {"content": {BINARY: {}}, "description": "JSON, or float32 rows (Accept)"}}
K_PARAMETER = {"name": "k", "in": "query", "schema": {"type": "integer", "default": DEFAULT_K, "minimum": 1}}
ID_PARAMETER = {
    "name": "id",
    "in": "query",
    "schema": {"type": "string"},
    "description": "with a raw image body",
}


@router.get("/healthz", summary="Liveness (no token needed)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Ready: model and gallery loaded, the gallery as on disk or in Milvus")
async def readyz(request: Request) -> Any:
    if request.app.state.service is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    service = service_of(request)
    items = await run_in_threadpool(service.gallery.ready)  # 503 saying why when not
    return {"status": "ready", "backend": service.backend_info.name, "gallery": items}


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(service: Service = Running) -> Response:
    return Response(service.metrics.text(), media_type=CONTENT_TYPE)


def _model_name(model: object) -> str:
    """The model as /v1/info names it: a file's or folder's name, a Triton model's URL (no credentials)."""
    return model.name if isinstance(model, Path) else shown(str(model))


@router.get("/v1/info", summary="The model, backend, gallery, batching and limits")
async def info(service: Service = Running) -> dict[str, Any]:
    settings = service.settings
    gallery = await run_in_threadpool(service.gallery.describe)  # a Milvus store: a call to it
    meta = dataclasses.asdict(service.meta)
    return {
        "version": __version__,
        "model": meta | {"name": _model_name(settings.model), "space_id": service.meta.space_id},
        "backend": {
            key: getattr(service.backend_info, key) for key in ("name", "device", "precision", "model_path")
        },
        "gallery": gallery,  # items, kind and the index path, or the store (no token) and collection
        "batching": {
            "max_batch": service.batcher.max_batch,
            "max_wait_ms": settings.max_wait_ms,
            "queue": settings.queue,
        },
        "limits": {
            "max_upload_mb": settings.max_upload_mb,
            "max_pixels": settings.max_pixels,
            "k_max": settings.k_max,
            "max_images": max_images(settings)[0],
        },
    }


@router.get(
    "/v1/watch", summary="The --watch source: its state, counts and last matches (after=SEQ: newer ones)"
)
async def watch(request: Request, after: int = Query(0, ge=0), service: Service = Running) -> dict[str, Any]:
    watching = request.app.state.watch
    if watching is None:
        raise ServeError(404, "this service watches no source", "Start it with --watch SOURCE")
    return await run_in_threadpool(watch_answer, service, watching.snapshot(after))


def watch_answer(service: Service, answer: dict[str, Any]) -> dict[str, Any]:
    """The watch's snapshot with each matched gallery item's image URL, where this server serves it."""
    for match in answer["recent"]:
        on_server = service.images.may_serve(match["path"])
        match["image"] = f"/v1/gallery/{quote(match['id'], safe='/')}/image" if on_server else None
    return answer


@router.post(
    "/v1/embed",
    summary="Embed uploaded images (fields named 'image', or one raw image body)",
    response_class=FastJSON,
    responses=EMBED_ANSWERS,
)
async def embed(request: Request) -> Response:
    service = service_of(request)  # not a dependency: the hot path skips their resolution
    uploads, _ = await read_images(request, service.settings)
    vectors = await embed_uploads(service, uploads)
    names = [upload.name for upload in uploads]
    return embeddings_answer(request.headers.get("accept", ""), service.meta.space_id, names, vectors)


@router.post(
    "/v1/search",
    summary="Nearest gallery items of uploaded images (or one raw image body), or of a JSON vector",
    response_class=FastJSON,
    openapi_extra={"parameters": [K_PARAMETER]},
)
async def search(request: Request) -> Response:
    service = service_of(request)
    k = k_of(request, service.settings.k_max)
    if request.headers.get("content-type", "").startswith("application/json"):
        vector, space_id = parse_vector(await read_json(request, service.settings))
        queries, names = vector[None, :], ["vector"]
    else:
        uploads, _ = await read_images(request, service.settings)
        queries, names = await embed_uploads(service, uploads), [u.name for u in uploads]
        space_id = service.meta.space_id
    return FastJSON(await run_in_threadpool(neighbours, service, queries, k, space_id, names))


def k_of(request: Request, k_max: int) -> int:
    """The query's k (default DEFAULT_K): a whole number from 1 to `k_max`, else 422."""
    given = request.query_params.get("k")
    if given is None:
        return DEFAULT_K
    if not WHOLE_NUMBER.fullmatch(given):
        raise ServeError(
            422, f"invalid k: {given[:20]!r} is not a whole number", f"Use k between 1 and {k_max}"
        )
    k = int(given)
    if not 1 <= k <= k_max:
        raise ServeError(422, f"k = {k} is out of range", f"Use k between 1 and {k_max}")
    return k


def neighbours(
    service: Service, queries: np.ndarray, k: int, space_id: str | None, names: list[str]
) -> dict[str, Any]:
    """`Index.search`'s answer as JSON (its records, as `invedge search --json` prints them), with
    each neighbour's recorded file and, where that file is on this server, the URL of its image."""
    index, result = service.gallery.search(queries, k, space_id)
    records = result.records(names)
    for record, locations in zip(records, result.locations, strict=True):
        record.pop("found", None)
        for hit, location in zip(record["neighbours"], locations, strict=True):
            hit["path"] = location or None
            on_server = service.images.may_serve(location)
            hit["image"] = f"/v1/gallery/{quote(hit['id'], safe='/')}/image" if on_server else None
    return {"k": k, "space_id": index.space_id, "results": records}


@router.post(
    "/v1/gallery",
    status_code=201,
    summary="Add an image to the gallery (fields 'image' and 'id', or a raw image body and ?id=)",
    response_class=FastJSON,
    openapi_extra={"parameters": [ID_PARAMETER]},
)
async def add_item(request: Request) -> Response:
    service = service_of(request)
    uploads, fields = await read_images(request, service.settings, fields=("id",))
    item_id = fields.get("id", "")
    if not ID_PATTERN.fullmatch(item_id):
        raise ServeError(
            422,
            "the id must be 1 to 256 printable characters",
            "Send a form field 'id' (with a raw image body: the query parameter ?id=)",
        )
    if len(uploads) != 1:
        raise ServeError(
            422, f"{len(uploads)} images sent; one gallery item takes one image", "Send one 'image'"
        )
    vectors = await embed_uploads(service, uploads)
    items = await run_in_threadpool(service.gallery.add, item_id, vectors[0], service.meta.space_id)
    return FastJSON({"id": item_id, "items": items}, status_code=201)


@router.delete("/v1/gallery/{item_id:path}", summary="Remove a gallery item")
async def remove_item(item_id: str, service: Service = Running) -> dict[str, Any]:
    items = await run_in_threadpool(service.gallery.remove, item_id)
    return {"id": item_id, "items": items}


@router.get("/v1/gallery/{item_id:path}/image", summary="The image file of a gallery item")
async def item_image(item_id: str, service: Service = Running) -> Response:
    image = await run_in_threadpool(served_image, service, item_id)
    return Response(image.data, media_type=image.media_type, headers={"X-Content-Type-Options": "nosniff"})


FAST = (embed, search, add_item)  # the endpoints lane.py calls directly (POST)


def served_image(service: Service, item_id: str) -> ServedImage:
    """The image file the gallery records for `item_id`, read as files.ImageRoots allows; 404 saying why not."""
    recorded = service.gallery.location(item_id)
    missing = f"no image file on this server for gallery item {item_id!r}"
    if recorded is None:
        raise ServeError(404, missing, "See the ids in the search results")
    try:
        return service.images.read(recorded)
    except NotServed as why:
        raise ServeError(
            404,
            f"{missing}: {why}",
            "Gallery images are served only from the server's --image-root folders (docs/SERVE_API.md)",
        ) from None


async def embed_uploads(service: Service, uploads: list[Upload]) -> np.ndarray:
    """Decode (small images here, others in the decode pool, all at once), then embed through the
    batcher: (N, d)."""
    settings, size = service.settings, service.meta.image_size
    if decoded_here(uploads, settings.max_pixels):
        return await service.batcher.embed([decode_checked(u.data, u.name, size) for u in uploads])
    loop = asyncio.get_running_loop()
    with service.batcher.arriving(len(uploads)):  # the batcher waits for these while they decode
        images = await asyncio.gather(
            *(
                loop.run_in_executor(
                    service.decoders, decode, upload.data, upload.name, size, settings.max_pixels
                )
                for upload in uploads
            )
        )
    return await service.batcher.embed(list(images))


def decoded_here(uploads: list[Upload], max_pixels: int) -> bool:
    """Whether the uploads are small enough to decode on the event loop: few bytes to read headers
    from (each image's pixels checked against `max_pixels` on the way), then few pixels."""
    if sum(len(upload.data) for upload in uploads) > INLINE_BYTES:
        return False
    return sum(check_pixels(upload.data, upload.name, max_pixels) for upload in uploads) <= INLINE_PIXELS


def parse_vector(body: Any) -> tuple[np.ndarray, str | None]:
    """{"vector": [float, ...], "space_id": optional str} → (d,) float32 and the space."""
    if not isinstance(body, dict) or not isinstance(body.get("vector"), list):
        raise ServeError(
            422, "the JSON body needs a 'vector': a list of numbers", 'Send {"vector": [0.1, ...]}'
        )
    space_id = body.get("space_id")
    if space_id is not None and not isinstance(space_id, str):
        raise ServeError(422, "'space_id' must be a string")
    try:
        vector = np.asarray(body["vector"], dtype=np.float32)
    except (TypeError, ValueError):
        raise ServeError(422, "'vector' must be a flat list of numbers") from None
    if vector.ndim != 1 or not vector.size or not np.isfinite(vector).all():
        raise ServeError(422, "'vector' must be a flat, non-empty list of finite numbers")
    return l2_normalize(vector[None, :])[0], space_id  # cosine scores, as for embedded queries
