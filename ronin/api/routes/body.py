"""Reading a JSON request body ourselves: one clear error for bad JSON, whatever the route."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from ronin.errors import InvalidJson


async def json_body(request: Request) -> Any:
    """The body as JSON; ``InvalidJson`` (400) if it is not."""
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidJson("the request body is not valid JSON") from None
