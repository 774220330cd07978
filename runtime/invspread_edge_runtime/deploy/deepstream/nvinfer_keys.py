"""The [property] keys Gst-nvinfer documents, kept as data so a test can hold our config to them.

Source: NVIDIA's Gst-nvinfer documentation, "Gst-nvinfer File Configuration Specifications"
(https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html), and
the key names as the plugin's parser spells them in `gstnvinfer_property_parser.h` (published in
the DeepStream SDK API reference, e.g. https://docs.nvidia.com/metropolis/deepstream/6.4/dev-guide/
sdk-api/gstnvinfer__property__parser_8h_source.html). Per-class keys of [class-attrs-*] groups
are left out: our config writes none.
"""

from __future__ import annotations

SOURCE = (
    "https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html "
    "(Gst-nvinfer File Configuration Specifications; key names as in gstnvinfer_property_parser.h)"
)

PROPERTY_KEYS: frozenset[str] = frozenset(
    {
        # element
        "gie-unique-id", "process-mode", "interval", "labelfile-path", "gpu-id",
        "secondary-reinfer-interval", "output-tensor-meta", "enable-dla", "use-dla-core",
        # engine
        "batch-size", "tensor-meta-pool-size", "network-mode", "model-engine-file", "int8-calib-file",
        "workspace-size",
        # model
        "output-blob-names", "is-classifier", "network-type", "force-implicit-batch-dim", "infer-dims",
        "output-io-formats", "layer-device-precision",
        # preprocessing
        "model-color-format", "net-scale-factor", "offsets", "mean-file", "maintain-aspect-ratio",
        "symmetric-padding", "scaling-filter", "scaling-compute-hw", "network-input-order",
        "input-tensor-from-meta",
        # custom code
        "custom-lib-path", "parse-bbox-func-name", "parse-bbox-instance-mask-func-name",
        "engine-create-func-name", "parse-classifier-func-name", "custom-network-config", "parse-func",
        # model files
        "model-file", "proto-file", "uff-file", "uff-input-order", "input-dims", "uff-input-dims",
        "uff-input-blob-name", "tlt-encoded-model", "tlt-model-key", "onnx-file",
        # detectors, classifiers, segmentation
        "num-detected-classes", "enable-dbscan", "cluster-mode", "classifier-type",
        "classifier-threshold", "classifier-async-mode", "segmentation-threshold",
        "segmentation-output-order", "output-instance-mask",
        # secondary-mode object filters
        "input-object-min-width", "input-object-min-height", "input-object-max-width",
        "input-object-max-height", "operate-on-gie-id", "operate-on-class-ids", "filter-out-class-ids",
    }
)  # fmt: skip
