"""Issue 27, "Ops UX": zhserve-train, zhserve-eval and zhserve-models never show a traceback for a user
error (a missing extra, a bad path, malformed JSONL with its line number, an unreachable URL): one
``error:`` line on stderr and exit status 2."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from training import cli, evaluate
from training.export import cli as models_cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def run_without(module: str, program: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """``program``'s main(args) in a fresh interpreter in which ``module`` cannot be imported."""
    code = f"import sys; sys.modules[{module!r}] = None; from {program} import main; sys.exit(main({args!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def malformed(tmp_path: Path) -> Path:
    path = tmp_path / "dev.jsonl"
    path.write_text('{"text": "很好", "label": "positive"}\n\n{"text": "坏", "label": \n', encoding="utf-8")
    return path


# ---------------------------------------------------------------- zhserve-train


@pytest.mark.parametrize(
    ("program", "args"),
    [
        ("training.cli", ["ner", "--data", "."]),
        ("training.export.cli", ["export", "--task", "ner", "--source", "damo/x", "--out", "out"]),
        ("training.export.cli", ["twin", "--task", "ner", "--out", "out"]),
    ],
)
def test_a_missing_extra_is_one_line_naming_the_extra(program: str, args: list[str]) -> None:
    result = run_without("torch", program, args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "torch" in result.stderr and "[train] extra" in result.stderr and "Traceback" not in result.stderr


def test_train_refuses_a_missing_data_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ner", "--data", str(tmp_path / "nowhere")]) == 2
    assert one_error_line(capsys).endswith("nowhere: no such directory")
    assert cli.main(["write-dev", str(tmp_path / "dev"), "--data", str(tmp_path / "nowhere")]) == 2
    one_error_line(capsys)


def test_train_reports_a_malformed_corpus_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ner").mkdir()
    (tmp_path / "ner" / "msra_train.jsonl").write_text('{"text": "a", "entities": []}\nnot json\n', encoding="utf-8")
    assert cli.main(["write-dev", str(tmp_path / "dev"), "--data", str(tmp_path)]) == 2
    assert "msra_train.jsonl line 2: not JSON" in one_error_line(capsys)


def test_train_refuses_a_config_file_that_is_not_there(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ner", "--config", str(tmp_path / "config.json")]) == 2
    assert "--config" in one_error_line(capsys)


# ---------------------------------------------------------------- zhserve-eval


def test_eval_names_the_malformed_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main([str(malformed(tmp_path)), "--model-dir", "models/ner"]) == 2
    assert one_error_line(capsys).endswith("dev.jsonl line 3: not JSON (Expecting value at column 24)")


def test_eval_names_a_line_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dev.jsonl"
    path.write_bytes(b'{"text": "a", "label": "positive"}\n{"text": "\xff"}\n')
    assert evaluate.main([str(path), "--url", "http://127.0.0.1:1"]) == 2
    assert "dev.jsonl line 2: not UTF-8" in one_error_line(capsys)


def test_eval_refuses_missing_data_and_a_directory_that_is_no_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate.main([str(tmp_path / "none.jsonl"), "--model-dir", "models/ner"]) == 2
    assert "no such file" in one_error_line(capsys)
    data = tmp_path / "dev.jsonl"
    data.write_text('{"text": "很好", "label": "positive"}\n', encoding="utf-8")
    assert evaluate.main([str(data), "--model-dir", str(tmp_path)]) == 2
    assert "is not a model directory" in one_error_line(capsys)
    data.write_text('{"text": "很好"}\n', encoding="utf-8")
    assert evaluate.main([str(data), "--model-dir", str(tmp_path)]) == 2
    assert "pass --task" in one_error_line(capsys)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def refusing_service() -> Iterator[str]:
    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b'{"error": {"code": "unauthorized", "message": "missing API key"}}'
            self.send_response(401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_eval_reports_a_service_it_cannot_reach_or_that_refuses(
    tmp_path: Path, closed_port: int, refusing_service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "dev.jsonl"
    data.write_text('{"text": "很好", "label": "positive"}\n', encoding="utf-8")
    assert evaluate.main([str(data), "--url", f"http://127.0.0.1:{closed_port}"]) == 2
    assert one_error_line(capsys).startswith(f"error: cannot reach http://127.0.0.1:{closed_port}/v1/batch")
    assert evaluate.main([str(data), "--url", refusing_service]) == 2
    assert "answered 401" in one_error_line(capsys)
    assert evaluate.main([str(data), "--url", "127.0.0.1:8000"]) == 2
    assert "expected http://" in one_error_line(capsys)


# ---------------------------------------------------------------- zhserve-models


def test_models_reports_a_source_that_is_neither_a_directory_nor_a_model_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    status = models_cli.main(["export", "--task", "ner", "--source", str(tmp_path / "x" / "y" / "z"), "--out", "o"])
    assert status == 2
    assert "--source" in one_error_line(capsys)


def test_models_reports_an_output_path_it_cannot_create(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    assert models_cli.main(["twin", "--task", "ner", "--size", "tiny", "--out", str(blocker / "twin")]) == 2
    assert str(blocker) in one_error_line(capsys)


def test_the_installed_console_script_shows_no_traceback(tmp_path: Path) -> None:
    """The same through a fresh interpreter, as a user runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "training.evaluate", str(malformed(tmp_path)), "--model-dir", "models/ner"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {tmp_path / 'dev.jsonl'} line 3: not JSON (Expecting value at column 24)"
