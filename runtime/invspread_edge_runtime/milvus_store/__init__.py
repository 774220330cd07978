"""Galleries in Milvus: a collection that Milvus alone holds, searched on Milvus' own servers.

A 100M-image gallery cannot be copied into one process, so a Milvus collection is not an engine of
`index.Index` (which keeps every vector): `MilvusGallery` is a `Gallery` as `Index` is (the root
gallery.py: the interface, and the rules with their messages).
One code path serves Milvus Lite (`--store milvus:FILE.db`: milvus-lite 3, a Python engine on
NumPy and faiss inside this process) and a Milvus server (`--store milvus://HOST:PORT`: Milvus' C++
engine in its own processes). pymilvus is optional (the `[milvus]` extra) and
imported only here, lazily.

One job per module:
- `address.py`: parsing `--store` and checking collection names (no pymilvus);
- `connect.py`: the client, its timeouts, and Milvus' errors turned into one-line ones;
- `collection.py`: schema, index kinds and their parameters, the properties that make it ours;
- `writes.py`: batched upserts with progress and retries; `tuning.py`: recall@10 and its tuning;
- `state.py`: what a collection records of the writes into it (complete or not, who writes it now,
  the temporaries a stopped --overwrite left), and the alive rule for a writer;
- `gallery.py`: `MilvusGallery`, `open_gallery`; `build.py`: `build_gallery` (and --overwrite).
"""
