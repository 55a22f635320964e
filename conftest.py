"""Repository-wide pytest setup for unit tests and notebooks (nbval)."""

import os

# An inherited MPLBACKEND (e.g. Agg from a CI image) would reach the notebook kernels and stop
# the inline backend from emitting figures, so stored image outputs would go missing.
os.environ.pop("MPLBACKEND", None)
# Notebooks pick their device through llama_edu.device; tests must not inherit a user's choice.
os.environ.pop("LLAMA_EDU_DEVICE", None)


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    """Run the llama.cpp tests last: under CI they wait for llama.cpp's background build."""
    items.sort(key=lambda item: item.get_closest_marker("llamacpp") is not None)
