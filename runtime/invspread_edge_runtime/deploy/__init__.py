"""An export folder laid out for NVIDIA's serving stacks: a Triton model repository (`triton/`) and a
DeepStream secondary-GIE config with the graph it needs (`deepstream/`)."""
