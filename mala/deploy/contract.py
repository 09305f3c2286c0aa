"""What an exported graph and its runners agree on: input and output names and the metadata key.

A module of constants below both `graph` (which writes ONNX files) and `backends` (which run them), so neither
imports the other for them; it imports nothing, so the ONNX runtime path stays free of torch.
"""

INPUT_NAME = "images"  # uint8 (B, H, W, 3)
RAW_OUTPUTS = ("score", "anomaly_map")  # what mala's backends read; they normalise with the thresholds they are given
# int64 (B,): each image's category as its place in the description's `categories`, the one the file was exported
# for or, routed, the one each image was routed to; UNKNOWN where the model cannot tell (no memory to route in).
# Files written before it lack this output.
CATEGORY_OUTPUT = "category"
UNKNOWN_CATEGORY = -1
GRAPH_OUTPUTS = (*RAW_OUTPUTS, CATEGORY_OUTPUT)  # what the torch graph and mala's backends give, in this order
# an exported file's outputs, in this order (the category last, so that the first four keep their places)
OUTPUT_NAMES = (*RAW_OUTPUTS, "normalized_score", "normalized_map", CATEGORY_OUTPUT)
METADATA_KEY = "mala"  # the ONNX metadata entry holding the description (image size, categories, calibration)
