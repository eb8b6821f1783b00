"""The CLI's remote backend reports a node it cannot reach as a network failure, not as the
database's."""

from __future__ import annotations

import pytest

from ronin.cli.remote import RemoteBackend
from ronin.errors import DatabaseError, RemoteUnreachable


async def test_a_closed_port_is_remote_unreachable_not_a_database_error() -> None:
    async with RemoteBackend("http://127.0.0.1:1", None) as remote:
        with pytest.raises(RemoteUnreachable) as caught:
            await remote.list_jobs(None, 10, None)
    assert not isinstance(caught.value, DatabaseError)
    assert caught.value.to_payload()["code"] == "REMOTE_UNREACHABLE"
    assert "RONIN_URL" in caught.value.message
