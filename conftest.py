"""Repository-wide pytest setup for unit tests and notebooks (nbval)."""

import os

# An inherited MPLBACKEND (e.g. Agg from a CI image) would reach the notebook kernels and stop
# the inline backend from emitting figures, so stored image outputs would go missing.
os.environ.pop("MPLBACKEND", None)
# Notebooks pick their device through llama_edu.device; tests must not inherit a user's choice.
os.environ.pop("LLAMA_EDU_DEVICE", None)
