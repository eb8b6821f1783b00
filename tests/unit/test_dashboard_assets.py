"""The dashboard needs no network at run time: no page, script or style names another host,
and Ronin's own scripts and styles stay small."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from ronin.api.app import STATIC_DIR
from ronin.api.pages.render import TEMPLATES_DIR

DASHBOARD = STATIC_DIR / "dashboard"
VENDOR = STATIC_DIR / "vendor"
URL = re.compile(rb"https?://", re.IGNORECASE)
MAX_OWN_GZIPPED = 100_000


def licence_files() -> set[Path]:
    record = json.loads((STATIC_DIR / "LICENSES.json").read_text())
    return {
        STATIC_DIR / package["directory"] / name
        for package in record["packages"]
        for name in package["licence_files"]
    }


def served_files() -> list[Path]:
    """Every template and every file the dashboard serves, but the licence texts."""
    licences = licence_files()
    files = [*TEMPLATES_DIR.glob("*.html"), *DASHBOARD.iterdir(), *VENDOR.glob("*/*")]
    return sorted(path for path in files if path.is_file() and path not in licences)


def test_no_page_script_or_style_names_an_external_url() -> None:
    files = served_files()
    assert any(path.suffix == ".html" for path in files)
    assert any(path.name == "sigma.min.js" for path in files)
    for path in files:
        found = URL.search(path.read_bytes())
        assert found is None, f"{path.name} names a URL at byte {found.start() if found else 0}"


def test_every_asset_a_template_names_is_shipped() -> None:
    for template in TEMPLATES_DIR.glob("*.html"):
        for asset in re.findall(r'(?:src|href)="/static/([^"]+)"', template.read_text()):
            assert (STATIC_DIR / asset).is_file(), (template.name, asset)


def test_the_vendored_libraries_are_recorded_with_their_licences() -> None:
    record = json.loads((STATIC_DIR / "LICENSES.json").read_text())
    directories = {package["directory"] for package in record["packages"]}
    assert {f"vendor/{path.name}" for path in VENDOR.iterdir()} <= directories
    for package in record["packages"]:
        assert package["integrity"].startswith("sha512-")
        assert package["licence_files"]
        assert package["version"]


def test_ronins_own_scripts_and_styles_are_under_100_kb_gzipped() -> None:
    own = sorted(DASHBOARD.glob("*.js")) + sorted(DASHBOARD.glob("*.css"))
    assert own
    size = sum(len(gzip.compress(path.read_bytes(), compresslevel=9)) for path in own)
    assert size < MAX_OWN_GZIPPED, size
