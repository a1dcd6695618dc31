"""Schemathesis against the running service's /openapi.json: generated requests (valid, invalid,
edge cases of every schema) to every route, bounded in number. No answer may be a 5xx, and every
answer must conform to the schema: a documented status code, content type and body shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.serve

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_generated_requests_get_no_5xx_and_answers_that_match_the_schema(zhserve_url: str, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    command = [
        str(schemathesis), "run", f"{zhserve_url}/openapi.json", "--url", zhserve_url,
        "--checks", CHECKS, "--max-examples", "15", "--generation-deterministic",
        "--request-timeout", "60", "--workers", "1", "--max-time", "180", "--no-color",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-12000:]
    assert "passed" in output.lower(), output[-4000:]
    # The fuzzing left the service healthy.
    assert httpx.get(f"{zhserve_url}/readyz", timeout=30).status_code == 200
