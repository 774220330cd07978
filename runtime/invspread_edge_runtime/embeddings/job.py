"""`invedge embed` as one call: `embed_images(EmbedOptions(...))` → `EmbedResult`.

    result = embed_images(EmbedOptions("model.onnx", ["photos/"], "photos.emb"))
    print(result.to_dict()["count"])

The embedding loop runs in this process (corpus.py) or, with `options.ray`, on a Ray cluster
(ray_embed.py); this module sits above both and chooses, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .corpus import EmbedOptions, EmbedResult, embed_in_process
from .videos import FrameEvents


def embed_images(
    options: EmbedOptions,
    *,
    on_start: Callable[[Any, Any], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    events: FrameEvents | None = None,
) -> EmbedResult:
    """Embed `options.images` with `options.model` into the embeddings folder `options.out`.

    `on_start(embedder, images)` is called once the model is open (with `--ray`: the `RayPlan`
    for the embedder), `on_progress(done, total)` after each batch of images; `events` hears of
    the video sources (in this process only: --ray refuses them). Ctrl-C raises
    `corpus.EmbeddingInterrupted` once what was embedded is saved: the same call resumes.
    """
    if options.ray is not None:
        from .ray_embed import embed_images_ray

        return embed_images_ray(options, on_start=on_start, on_progress=on_progress)
    return embed_in_process(options, on_start=on_start, on_progress=on_progress, events=events)
