"""`invedge serve`: an HTTP embedding and search service over one model and one gallery index.

Torch-free, an optional extra (`pip install './runtime[serve]'`: fastapi, uvicorn, python-multipart,
prometheus-client). The pieces, one job each: `settings` (the flags, checked), `batcher` (one
worker thread owns the backend; requests that arrive together run as one batch), `gallery` (the
index, searched in memory, changed under the CLI's lock) or `store_gallery` (a Milvus collection,
every call asked of Milvus), `uploads` (request bodies and images
within limits), `files` (which gallery image files may be handed out: only under --image-root, no
links, regular image files), `auth` (who may ask: the token, the Host, the origin), `app` (the
routes), `server` (uvicorn, the serving line, the drain on SIGTERM).
"""
