"""Shared by the tests: where the repository's files are."""

import json
import os
import pathlib

import sys

import pytest

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent
REPO_DIR = PACKAGE_DIR.parent.parent.parent
# The tests are of this tree's package, installed or not.
sys.path.insert(0, str(PACKAGE_DIR))


def vectors_path() -> pathlib.Path:
    return pathlib.Path(os.environ.get("BOOKD_VECTORS", REPO_DIR / "docs" / "protocol-vectors.json"))


@pytest.fixture(scope="session")
def vectors_file():
    with open(vectors_path()) as file:
        return json.load(file)
