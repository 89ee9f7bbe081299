"""Fixtures of the end-to-end tests."""
from __future__ import annotations

import uuid

import pytest

from runners.topics import TopicSet


@pytest.fixture
def topics(kafka_bootstrap):
    """The four topics of DESIGN.md §2 under unique names, deleted after the test."""
    created = TopicSet.create(kafka_bootstrap, uuid.uuid4().hex[:8])
    yield created
    created.delete(kafka_bootstrap)
