"""Shared test settings. In CI (CI set in the environment) hypothesis draws the same
examples on every run, so a run's outcome depends on the code alone; elsewhere it
explores new examples each time."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
