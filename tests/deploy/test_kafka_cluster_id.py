"""The local broker's KRaft cluster id never starts with '-' (the storage tool would read it as an option)."""
from __future__ import annotations

import uuid
from unittest import mock

from runners.local import kafka


def test_cluster_id_never_starts_with_a_dash():
    # The first draw encodes to an id starting with '-' (bytes 0xf8...), the second does not.
    dashed, plain = uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x00" * 16)
    with mock.patch.object(kafka.uuid, "uuid4", side_effect=[dashed, plain]):
        cluster_id = kafka._cluster_id()
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAAA"
    assert all(not kafka._cluster_id().startswith("-") for _ in range(2000))
