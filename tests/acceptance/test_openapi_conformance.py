"""Schemathesis against a running node's own OpenAPI document: whatever it is sent, the node
answers without a 5xx and every answer matches the document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.acceptance.serve_support import environment, served_node

WRITE = "write-token-0123456789"
TOKENS = f"read:read-token-0123456789,write:{WRITE}"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance," + (
    "response_schema_conformance"
)


def test_every_answer_matches_the_served_openapi_document(tmp_path: Path, db_url: str) -> None:
    # No worker: the jobs schemathesis submits are stored, never run.
    with served_node(
        tmp_path, db_url, "--workers", "0", RONIN_API_TOKENS=TOKENS, RONIN_ALLOW="127.0.0.0/8"
    ) as node:
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                "from schemathesis.cli import schemathesis; schemathesis()",
                "run",
                f"{node.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {WRITE}",
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "30",
                "--seed",
                "20261129",
                # A pending job's event stream and the change stream never end by design: their own
                # tests cover them.
                "--exclude-path-regex",
                "/(events|stream)$",
                "--request-timeout",
                "30",
                "--no-color",
            ],
            env=environment(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
        assert " passed" in run.stdout
        assert node.stop() == 0
        assert "Traceback" not in node.log()
