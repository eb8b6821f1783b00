"""Debian's Chromium as the browser tests and the dashboard benchmark launch it."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
#: No sandbox (the tests run as root), no connection Chromium would make on its own (this
#: machine's closed network refuses them), WebGL in software (SwiftShader). Playwright gives
#: every launch a fresh temporary user data dir of its own.
LAUNCH_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
VIEWPORT = {"width": 1280, "height": 800}
