"""The Predictor interface and its ONNX Runtime and torch backends."""
