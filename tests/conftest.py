"""pytest setup for the unit tests."""

import pytest

# the shared check tests live in a helper module; give its asserts pytest's detailed messages
pytest.register_assert_rewrite("check_harness")
