"""llama_edu: build a Llama language model piece by piece, in notebooks backed by tested code."""

__version__ = "0.1.0"
