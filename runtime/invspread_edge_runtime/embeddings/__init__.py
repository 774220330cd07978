"""Embeddings folders: what one holds (`layout`), reading it back (`reader`), writing it part by part
(`writer`, over `parts` on disk), the folder as a whole (`folder`: where a run may write, the
manifest and swap that finish it, recovery of a killed swap), and the job that embeds a corpus of
images into one (`corpus`: its options, result and loop in this process; `ray_embed`: the loop on
a Ray cluster; `job.embed_images`: the one call, choosing between the two).

Folder problems raise `errors.EmbeddingsError`.
"""
