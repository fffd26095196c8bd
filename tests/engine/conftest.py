"""Registers the tiny detector and dataset of :mod:`engine_helpers` for the engine tests."""

import engine_helpers  # noqa: F401
