# README command 1: `make demo`; README command 2: `make test`. Both install first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CHROMIUM := /usr/bin/chromium
DEMO    ?= runs/demo
DUP     ?= runs/fmnist_dup

.PHONY: install data browser rtsp-deps triton-server triton-serve milvus-server wrk demo serve bench-serve dedup-model bench-explore test test-slow trt-api test-trt test-arm64 lint clean

# Idempotent: re-runs pip only when the project's install files change.
install: $(STAMP)

$(STAMP): pyproject.toml runtime/pyproject.toml runtime/invspread_edge_runtime/VERSION
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e './runtime[cpu,search,video,triton]' -e '.[dev]'
	touch $(STAMP)

# The default data set comes from Debian; nothing is downloaded at run time.
data: $(FMNIST)

$(FMNIST):
	@command -v apt-get >/dev/null || { echo "install the Debian package dataset-fashion-mnist"; exit 1; }
	(apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist))

# The page test of `invedge serve` drives Debian's Chromium with Playwright (whose own browser download
# cannot run here): the browser comes from apt, like the data.
browser: $(CHROMIUM)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "install the Debian package chromium"; exit 1; }
	(apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium))

# The stream tests run a real RTSP server (tests/rtsp_server.py) and read gst: pipelines: GStreamer's,
# whose Python bindings are the system python3's (with its numpy and Pillow, for our GStreamer reader), so
# they come from apt like the browser; installed only when a package is missing.
RTSP_DEPS := gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-tools gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly python3-gi gir1.2-gstreamer-1.0 \
	gir1.2-gst-plugins-base-1.0 python3-numpy python3-pil

rtsp-deps:
	@dpkg -s $(RTSP_DEPS) >/dev/null 2>&1 || { \
		command -v apt-get >/dev/null || { echo "install the Debian packages $(RTSP_DEPS)"; exit 1; }; \
		apt-get install -y -qq $(RTSP_DEPS) || (apt-get update -qq && apt-get install -y -qq $(RTSP_DEPS)); }

# wrk (a C HTTP load generator) drives `invedge serve` in benchmarks/serve_load.py and its test; from apt.
WRK := /usr/bin/wrk

wrk: $(WRK)

$(WRK):
	@command -v apt-get >/dev/null || { echo "install the Debian package wrk"; exit 1; }
	(apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk))

# What `invedge serve` costs over the offline Embedder (benchmarks/serve_load.py: wrk and Python clients,
# the tiny and the width-64 model); e.g. make bench-serve ARGS="--json serve.json --md serve.md".
bench-serve: install data wrk
	$(BIN)/python benchmarks/serve_load.py $(ARGS)

# A short run (about 2 minutes of training on 2 cores), then the paper's kNN on the full split.
# The main job end to end on the default data (about 6 minutes on 2 cores): train, evaluate, export
# (ONNX + INT8 pair + FP16, each checked), then the runtime: embed a gallery, index it, search it, bench.
demo: install data
	$(BIN)/invedge train --data fashion-mnist --limit 20000 --width 16 --epochs 3 --out $(DEMO) --overwrite
	$(BIN)/invedge eval $(DEMO)
	$(BIN)/invedge export $(DEMO) --int8 --fp16
	rm -rf $(DEMO)/gallery $(DEMO)/queries $(DEMO)/gallery.emb
	$(BIN)/python scripts/sample_images.py --count 500 --out $(DEMO)/gallery
	$(BIN)/python scripts/sample_images.py --count 6 --offset 5000 --out $(DEMO)/queries
	$(BIN)/invedge embed $(DEMO)/export $(DEMO)/gallery --out $(DEMO)/gallery.emb
	$(BIN)/invedge index build $(DEMO)/gallery.emb --out $(DEMO)/gallery.index --overwrite
	$(BIN)/invedge search $(DEMO)/gallery.index $(DEMO)/queries --k 5 --grid $(DEMO)/search.png
	$(BIN)/invedge bench $(DEMO) --runtimes ort-cpu,torch --batch 1,64 --images 500 --seconds 1 \
		--md $(DEMO)/bench.md --plot $(DEMO)/bench.png --json $(DEMO)/bench.json
	@echo "serve the demo gallery (a web page and an HTTP API): make serve, or"
	@echo "  $(BIN)/invedge serve $(DEMO)/export --index $(DEMO)/gallery.index --image-root $(DEMO)/gallery"

# An embedding for near-duplicates (`invedge dedup`): the full training split, 5 epochs with
# --preset duplicates (about 8 minutes on 2 cores), exported; then benchmarks/near_duplicates.py on it.
dedup-model: install data
	$(BIN)/invedge train --data fashion-mnist --width 16 --epochs 5 --preset duplicates --out $(DUP) --overwrite
	$(BIN)/invedge export $(DUP) --int8
	$(BIN)/python benchmarks/near_duplicates.py --model $(DUP)/export

# The explore verbs at scale: 1 000 000 × 128 (dedup exact, k-means, select), the map on 100 000.
bench-explore: install
	$(BIN)/python benchmarks/explore.py $(ARGS)

# The demo gallery as a service on http://127.0.0.1:8000 (after make demo); Ctrl-C stops it.
# --image-root: the folder whose images the page may show (the one the gallery was embedded from).
serve: install
	$(BIN)/invedge serve $(DEMO)/export --index $(DEMO)/gallery.index --image-root $(DEMO)/gallery

# The Triton tests' server: PyPI's nvidia-pytriton wheel bundles a tritonserver binary (Python backend only),
# installed with --no-deps into the ignored .cache/pytriton (its own dependencies pin numpy < 2: never into
# .venv). Its backend's Python is .cache/triton-python: a venv with the numpy the stub was tested with (it is
# built against numpy 1) that adds this checkout's .venv packages after its own. An install step (it
# downloads from the package index once); without it the Triton tests skip, naming this target
# (and fail under CI=true). `make test` runs it first, like the apt targets. Each step is skipped when its
# result is there; a cut-short install starts over.
PYTRITON  := .cache/pytriton/pytriton/tritonserver/bin/tritonserver
TRITON_PY := .cache/triton-python/.installed

triton-server: $(PYTRITON) $(TRITON_PY)

$(PYTRITON): | $(STAMP)
	rm -rf .cache/pytriton .cache/pytriton.partial
	$(BIN)/pip install -q --no-deps --target .cache/pytriton.partial nvidia-pytriton==0.7.0
	mv .cache/pytriton.partial .cache/pytriton

$(TRITON_PY): | $(STAMP)
	rm -rf .cache/triton-python
	"$$($(BIN)/python -c 'import sys; print(sys.base_prefix)')/bin/python3" -m venv .cache/triton-python
	.cache/triton-python/bin/python3 -m pip install -q numpy==1.26.4
	echo "import site; site.addsitedir('$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')')" \
		> "$$(.cache/triton-python/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/invedge_venv.pth"
	touch $(TRITON_PY)

# Serve a model repository here with that binary (Python backend only: a repository written with
# `invedge deploy triton EXPORT --out REPO --embedding python --device cpu`); Ctrl-C stops it.
# scripts/tritonserver_local.py sets up the stub, LD_LIBRARY_PATH and PATH (the tests start it the same way).
triton-serve: triton-server
	@test -n "$(REPO)" || { echo "error: no repository given. Run make triton-serve REPO=path/to/repo"; exit 1; }
	$(BIN)/python scripts/tritonserver_local.py "$(REPO)" $(if $(ARGS),-- $(ARGS))

# A real Milvus server (Milvus 2.3 standalone: the dev extra's `milvus` package, Linux x86_64) in the
# foreground, every port chosen free (PORT: the client port; its ports listen on every interface, the
# client port needs the token in DATA/token); Ctrl-C stops it. The tests
# and benchmarks start it the same way (scripts/milvus_server_local.py). See docs/milvus.md.
milvus-server: install
	@test -n "$(DATA)" || { echo "error: no data folder given. Run make milvus-server DATA=path/to/folder"; exit 1; }
	$(BIN)/python scripts/milvus_server_local.py --data "$(DATA)" $(if $(PORT),--port $(PORT))

test: install data browser rtsp-deps triton-server wrk
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

test-slow: install data
	$(BIN)/python -m pytest -q -m slow

# Our TensorRT code against the real TensorRT 10.3 and 11.x Python APIs (no GPU). The one target that
# downloads: the API-only installs (bindings wheels from the package index, ~25 MB once) go to the ignored
# .cache/tensorrt-api/; `make test` runs these checks from that cache, or skips them naming this target.
trt-api: install
	$(BIN)/python tests/runtime/native_tensorrt/real_api/prepare.py

test-trt: trt-api
	$(BIN)/python -m pytest -q -rA tests/runtime/native_tensorrt/ \
		tests/runtime/test_verify.py::test_native_tensorrt_build_runs_the_probe_check

# The runtime on arm64 (a Jetson's architecture) under qemu-user, as root: an arm64 Debian root made once
# (about 5 minutes; cached in the ignored .cache/arm64-root), `pip install './runtime[cpu,search,serve]'`
# there, then embed, index, search, verify and serve, and the embeddings against x86's. Not in `make test`.
test-arm64: install data
	$(BIN)/python tests/arm64/run.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# --one-file-system: never into /dev, /proc or /sys if a killed `make test-arm64` left them mounted in its root.
clean:
	rm -rf --one-file-system $(VENV) .cache runs
