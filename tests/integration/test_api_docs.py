"""``/docs`` works without internet: Swagger UI's files come from the node itself, and they
are the ones scripts/fetch-assets recorded in LICENSES.json."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from ronin.api.app import STATIC_DIR
from tests.integration.api_support import api_client

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture
async def client(db_url: str, pool: AsyncConnectionPool[Any]) -> Any:
    async with api_client(db_url, pool) as opened:
        yield opened


async def test_docs_load_every_asset_from_the_node(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert re.findall(r"https?://", page.text) == []
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {asset.rsplit(".", 1)[-1] for asset in assets} == {"js", "css", "png"}
    for asset in assets:
        assert asset.startswith("/static/swagger-ui/"), asset
        answer = await client.get(asset)
        assert answer.status_code == 200, asset
        expected = CONTENT_TYPES["." + asset.rsplit(".", 1)[-1]]
        assert answer.headers["content-type"].startswith(expected), asset
        assert len(answer.content) > 100
    assert "url: '/openapi.json'" in page.text
    assert '"validatorUrl": null' in page.text  # no spec sent to validator.swagger.io
    assert (await client.get("/openapi.json")).status_code == 200


async def test_redoc_is_gone_rather_than_blank(client: httpx.AsyncClient) -> None:
    assert (await client.get("/redoc")).status_code == 404


def test_the_shipped_assets_are_the_recorded_ones_with_their_licence() -> None:
    record = json.loads((STATIC_DIR / "LICENSES.json").read_text())
    packages = {package["package"]: package for package in record["packages"]}
    assert set(packages) == {"swagger-ui-dist", "graphology", "sigma"}
    assert packages["swagger-ui-dist"]["licence"] == "Apache-2.0"
    assert packages["swagger-ui-dist"]["directory"] == "swagger-ui"
    for package in packages.values():
        assert package["integrity"].startswith("sha512-")
        assert package["licence_files"], package["package"]
        directory = STATIC_DIR / package["directory"]
        shipped = {path.name for path in directory.iterdir()}
        assert shipped == set(package["files"])
        for name, digest in package["files"].items():
            assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (STATIC_DIR / "swagger-ui" / "LICENSE").read_text()
    for name in ("graphology", "sigma"):
        assert "MIT" in packages[name]["licence"]
        assert (
            "Permission is hereby granted"
            in (STATIC_DIR / "vendor" / name / "LICENSE.txt").read_text()
        )
