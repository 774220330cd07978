"""The INT8 calibration sets (manifests of which images calibrate), shipped as `invspread_edge_export`'s data."""
