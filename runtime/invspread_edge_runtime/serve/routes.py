"""The endpoints: health, metrics, info, embed, search, gallery changes and the --watch source's matches
(the contract: docs/SERVE_API.md).

Each endpoint reads its input within the limits (uploads.py), decodes images in the decode pool,
embeds them through the batcher and answers JSON; every refusal is a ServeError (errors.py).
Blocking work (a search, a file write under the lock) runs in a worker thread, never on the loop.
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
from .errors import ServeError, starting
from .files import NotServed, ServedImage
from .images import decode
from .metrics import CONTENT_TYPE
from .service import Service
from .uploads import Upload, max_images, read_images, read_json

ID_PATTERN = re.compile(r"[^\x00-\x1f\x7f]{1,256}")  # printable, 1..256 characters


def service_of(request: Request) -> Service:
    """The running service (the token, if any, was checked by auth.Guard); 503 while it is starting."""
    service: Service | None = request.app.state.service
    if service is None:
        raise starting()
    return service


router = APIRouter()
Running = Depends(service_of)


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


@router.post("/v1/embed", summary="Embed uploaded images (fields named 'image')")
async def embed(request: Request, service: Service = Running) -> dict[str, Any]:
    uploads, _ = await read_images(request, service.settings)
    vectors = await embed_uploads(service, uploads)
    return {
        "space_id": service.meta.space_id,
        "dim": int(vectors.shape[1]),
        "items": [
            {"name": upload.name, "embedding": vector.tolist()}
            for upload, vector in zip(uploads, vectors, strict=True)
        ],
    }


@router.post("/v1/search", summary="Nearest gallery items of uploaded images, or of a JSON vector")
async def search(request: Request, k: int = Query(DEFAULT_K), service: Service = Running) -> dict[str, Any]:
    k_max = service.settings.k_max
    if not 1 <= k <= k_max:
        raise ServeError(422, f"k = {k} is out of range", f"Use k between 1 and {k_max}")
    if request.headers.get("content-type", "").startswith("application/json"):
        vector, space_id = parse_vector(await read_json(request, service.settings))
        queries, names = vector[None, :], ["vector"]
    else:
        uploads, _ = await read_images(request, service.settings)
        queries, names = await embed_uploads(service, uploads), [u.name for u in uploads]
        space_id = service.meta.space_id
    return await run_in_threadpool(neighbours, service, queries, k, space_id, names)


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


@router.post("/v1/gallery", status_code=201, summary="Add an image to the gallery (fields 'image' and 'id')")
async def add_item(request: Request, service: Service = Running) -> dict[str, Any]:
    uploads, fields = await read_images(request, service.settings, fields=("id",))
    item_id = fields.get("id", "")
    if not ID_PATTERN.fullmatch(item_id):
        raise ServeError(422, "the id must be 1 to 256 printable characters", "Send a form field 'id'")
    if len(uploads) != 1:
        raise ServeError(
            422, f"{len(uploads)} images sent; one gallery item takes one image", "Send one 'image'"
        )
    vectors = await embed_uploads(service, uploads)
    items = await run_in_threadpool(service.gallery.add, item_id, vectors[0], service.meta.space_id)
    return {"id": item_id, "items": items}


@router.delete("/v1/gallery/{item_id:path}", summary="Remove a gallery item")
async def remove_item(item_id: str, service: Service = Running) -> dict[str, Any]:
    items = await run_in_threadpool(service.gallery.remove, item_id)
    return {"id": item_id, "items": items}


@router.get("/v1/gallery/{item_id:path}/image", summary="The image file of a gallery item")
async def item_image(item_id: str, service: Service = Running) -> Response:
    image = await run_in_threadpool(served_image, service, item_id)
    return Response(image.data, media_type=image.media_type, headers={"X-Content-Type-Options": "nosniff"})


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
    """Decode in the decode pool (all uploads at once), then embed through the batcher: (N, d)."""
    loop = asyncio.get_running_loop()
    settings, size = service.settings, service.meta.image_size
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
