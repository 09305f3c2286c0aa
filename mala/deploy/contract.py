"""What an exported graph and its runners agree on: input and output names and the metadata key.

A module of constants below both `graph` (which writes ONNX files) and `backends` (which run them), so neither
imports the other for them; it imports nothing, so the ONNX runtime path stays free of torch.
"""

INPUT_NAME = "images"  # uint8 (B, H, W, 3)
RAW_OUTPUTS = ("score", "anomaly_map")  # what mala's backends read; they normalise with the thresholds they are given
OUTPUT_NAMES = (*RAW_OUTPUTS, "normalized_score", "normalized_map")  # an exported file's outputs, in this order
METADATA_KEY = "mala"  # the ONNX metadata entry holding the description (image size, categories, calibration)
