"""Fixtures for the optional dependencies of the dynamics tests (a failure, not a skip, in CI)."""

from __future__ import annotations

import importlib

import pytest


@pytest.fixture
def pyspiel(require):
    require(module="pyspiel")
    return importlib.import_module("pyspiel")


@pytest.fixture
def osa(require):
    """OpenSpiel's alpha-Rank module."""
    require(module="open_spiel")
    return importlib.import_module("open_spiel.python.egt.alpharank")


@pytest.fixture
def os_nash_averaging(require):
    """OpenSpiel's Nash averaging (it solves its convex programs with cvxpy)."""
    require(module="open_spiel")
    require(module="cvxpy")
    return importlib.import_module("open_spiel.python.algorithms.nash_averaging")


@pytest.fixture
def ribs(require):
    require(module="ribs")
    return importlib.import_module("ribs")
