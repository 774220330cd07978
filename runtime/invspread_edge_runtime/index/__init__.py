"""A gallery of embeddings searched by inner product (= cosine on L2-normalised rows).

Kinds:
- `flat` (default): exact. faiss `IndexFlatIP` when faiss is installed, else the blocked numpy
  kernel of `topk.py` (on par with faiss here), or on a GPU backend the Gemm + TopK ONNX graph of
  `search_graph.py` (`Index.use_device`).
- `ivf`, `hnsw`: faiss approximate indexes for large galleries; recall@10 against exact search is
  measured when they are built and stored with them.

One job per module:
- `gallery.py`: `Index`, the one object callers hold (build, load, save, add, remove, search), and
  `changing` (lock, re-read, change, save: the one way to change an index file);
- `items.py`: the gallery's vectors, ids, image files and space, kept by the gallery rules (the
  root gallery.py);
- `dispatch.py`: which engine answers, and keeping every engine in step with the changes;
- `build.py`: building a new index, measuring its recall@10 and tuning it;
- `engine.py`: the interface every engine implements, and how a remote store (Milvus) plugs in;
- `topk.py` (numpy), `faiss_engines.py` (faiss flat, ivf, hnsw and their tuning), `search_graph.py`
  (ONNX on a GPU): the engines;
- `index_file.py`: the file format (checksummed, atomic) and the writers' lock (`writing`);
- `result.py`: `SearchResult`; `settings.py`: kinds and defaults (numpy-free, for the CLI);
- `manage.py`: `invedge index build|add|remove|info` as library calls, options in and results out,
  for an index file or a Milvus collection.
"""
