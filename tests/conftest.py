"""pytest setup for the unit tests."""

import warnings

import pytest

# the shared check tests live in a helper module; give its asserts pytest's detailed messages
pytest.register_assert_rewrite("check_harness")


@pytest.fixture
def strict_plotting():
    """Fail on any warning while plotting, and leave no pyplot figure open after a test."""
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield
    plt.close("all")
