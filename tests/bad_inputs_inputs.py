"""Bad-input rows: inputs. Joined into one table by test_bad_inputs."""

from __future__ import annotations

from test_bad_inputs import Bad  # noqa: F401

ROWS = []
