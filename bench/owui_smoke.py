"""A by-hand check of the Function inside a real Open WebUI 0.12.4 (``make owui-smoke``).

Not part of CI (it installs Open WebUI, several GB with torch). Steps, each
printed as it happens:

1. a virtualenv *outside* the repository (``--venv``, default
   ``~/.cache/orpipe-owui-venv``) with ``torch==2.13.0`` (the local CPU wheel,
   so pip does not fetch a CUDA build), ``open-webui==0.12.4`` and this
   project, installed as a wheel would be (not editable);
2. the mock OpenRouter on a free port, requiring an API key;
3. ``open-webui serve`` on a free port, offline, with a throw-away DATA_DIR;
4. through Open WebUI's HTTP API: sign up the first user (the admin),
   create the Function from ``adapters/owui_pipe.py``, toggle it on, set
   its valves (BASE_URL → the mock, API_KEY), check the key is stored
   encrypted, list the models, and stream a chat (plain and reasoning)
   through ``/api/chat/completions``, comparing the text with the mock's plan;
5. attachments: upload a PNG through Open WebUI's files API, send it in a
   chat and check (from the mock's counters) that it reached the model
   inline; the mock's model also generates an image, which must come back
   as a Markdown link to a file Open WebUI stores and serves as a PNG;
6. in the browser (``bench.owui_browser``, headless Chromium over the
   DevTools protocol): sign in through the form, type a message for a
   reasoning model (two turns) and for a plain model, and check no toast,
   Copy = the visible answer, at most one thinking indicator, a clean status
   history, and that turn 2 replayed turn 1's reasoning (the mock's request
   log). Screenshots go to ``<log dir>/browser/``. Every browser check runs
   and prints ``ok:`` or ``FAIL:``; the step fails if any did.

The mock paces answers (``--param tps=…``) so the browser sees them stream.
``--browser-only`` skips the HTTP chat and attachment checks (4's chats, 5),
``--no-browser`` skips 6. ``--workers N`` runs instead the multi-worker step
(``bench.owui_workers_smoke``: N uvicorn workers on PostgreSQL and Redis, ``--chats``
two-turn reasoning chats). Exit status 0 when every check passed. Open WebUI's
log is kept in the temporary directory printed at the start.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from orpipe.bench.headless_chromium import ChromiumMissing
from orpipe.bench.mock_process import BenchError, running_mock_child
from orpipe.bench.mock_scenarios import plan
from orpipe.bench.owui_browser import run_browser_checks

REPO = Path(__file__).resolve().parents[1]
OWUI_VERSION = "0.12.4"
TORCH_PIN = "torch==2.13.0"
MOCK_KEY = "sk-or-smoke-" + secrets.token_hex(8)
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "smoke-Pass-1"
#: Tokens per second the mock streams at: slow enough that the browser step sees each
#: answer stream (a reasoning answer takes about 2.4 s), quick enough for the API steps.
MOCK_TPS = "25"


class SmokeFailure(Exception):
    """A check failed; the message says which and what was seen."""


def say(message: str) -> None:
    print(f"[owui-smoke] {message}", flush=True)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeFailure(what)
    say(f"ok: {what}")


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        say(f"creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    has_torch = [str(python), "-c", "import torch"]
    if subprocess.run(has_torch, check=False, capture_output=True).returncode:
        say(f"installing {TORCH_PIN} (the local CPU wheel)")
        subprocess.run([*pip, TORCH_PIN], check=True)
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('open-webui'))"]
    found = subprocess.run(probe, check=False, capture_output=True, text=True).stdout.strip()
    if found != OWUI_VERSION:
        say(f"installing open-webui=={OWUI_VERSION} (several minutes)")
        subprocess.run([*pip, f"open-webui=={OWUI_VERSION}"], check=True)
    say("installing this project into Open WebUI's environment (as a wheel would be)")
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(REPO)], check=True)
    subprocess.run([*pip, str(REPO)], check=True)  # its dependencies, against Open WebUI's pins
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(argv: list[str], *, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(predicate: Any, what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.5)
    raise SmokeFailure(f"timed out after {timeout_s:.0f} s waiting for {what}")


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stream_chat(
    client: httpx.Client, model: str, content: str | list[dict[str, Any]] = "Say something."
) -> tuple[str, str, list[dict[str, Any]]]:
    payload = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": content}],
    }
    text, reasoning, lines = "", "", []
    with client.stream("POST", "/api/chat/completions", json=payload, timeout=60) as response:
        if response.status_code != 200:
            raise SmokeFailure(f"chat returned HTTP {response.status_code}: {response.read()!r}")
        for line in response.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            lines.append(chunk)
            if "error" in chunk:
                raise SmokeFailure(f"chat streamed an error: {chunk['error']}")
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                text += delta.get("content") or ""
                reasoning += delta.get("reasoning_content") or ""
    return text, reasoning, lines


@dataclass(frozen=True)
class Steps:
    """Which optional steps run."""

    api_chats: bool = True
    browser: bool = True


def owui_env(work: Path) -> dict[str, str]:
    """Open WebUI's environment: offline, no other connection, a throw-away DATA_DIR."""
    inherited = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    return inherited | {
        "OFFLINE_MODE": "true",
        "ENABLE_OPENAI_API": "false",
        "ENABLE_OLLAMA_API": "false",
        "BYPASS_EMBEDDING_AND_RETRIEVAL": "true",
        "RAG_EMBEDDING_ENGINE": "openai",
        "WEBUI_SECRET_KEY": secrets.token_urlsafe(32),
        "DATA_DIR": str(work / "data"),
        "HF_HUB_OFFLINE": "1",
    }


def serve_argv(venv: Path, port: int) -> list[str]:
    return [str(venv / "bin" / "open-webui"), "serve", "--host", "127.0.0.1", "--port", str(port)]


def run(venv: Path, steps: Steps = Steps()) -> None:
    work = Path(tempfile.mkdtemp(prefix="orpipe-owui-smoke-"))
    say(f"logs and DATA_DIR under {work}")
    mock_log = work / "mock.log"
    with running_mock_child(params={"tps": MOCK_TPS}, api_key=MOCK_KEY, log_path=mock_log) as mock:
        base_url = mock.base_url
        say(f"mock OpenRouter at {base_url}")
        port = free_port()
        owui = f"http://127.0.0.1:{port}"
        say(f"starting Open WebUI {OWUI_VERSION} at {owui} (first start takes a while)")
        with process(serve_argv(venv, port), env=owui_env(work), log=work / "open-webui.log"):
            wait_for(lambda: healthy(owui), "Open WebUI /health", 300)
            say("Open WebUI is up")
            exercise(owui, base_url, work, steps)


def exercise(owui: str, base_url: str, work: Path, steps: Steps = Steps()) -> None:
    with httpx.Client(base_url=owui, timeout=30) as client:
        install_function(client, base_url)
        if steps.api_chats:
            api_chats(client)
            attachments(client, base_url)
    if steps.browser:
        browser(owui, base_url, work / "browser")


def install_function(client: httpx.Client, base_url: str) -> None:
    """Sign up the admin, create the Function, switch it on, set and check its valves."""
    signup = client.post(
        "/api/v1/auths/signup",
        json={"name": "Smoke Admin", "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
    )
    check(signup.status_code == 200, f"first user signed up (HTTP {signup.status_code})")
    client.headers["Authorization"] = f"Bearer {signup.json()['token']}"

    source = (REPO / "adapters" / "owui_pipe.py").read_text(encoding="utf-8")
    created = client.post(
        "/api/v1/functions/create",
        json={
            "id": "orpipe",
            "name": "orpipe",
            "content": source,
            "meta": {"description": "orpipe smoke test"},
        },
    )
    check(
        created.status_code == 200,
        f"Function created (HTTP {created.status_code}: {created.text[:200]})",
    )
    toggled = client.post("/api/v1/functions/id/orpipe/toggle")
    check(
        toggled.status_code == 200 and toggled.json().get("is_active") is True,
        "Function toggled on",
    )
    spec = client.get("/api/v1/functions/id/orpipe/valves/spec").json()
    check(
        "API_KEY" in spec.get("properties", {}),
        f"valve form has API_KEY ({len(spec.get('properties', {}))} valves)",
    )
    updated = client.post(
        "/api/v1/functions/id/orpipe/valves/update",
        json={"BASE_URL": base_url, "API_KEY": MOCK_KEY},
    )
    check(updated.status_code == 200, f"valves updated (HTTP {updated.status_code})")
    stored = client.get("/api/v1/functions/id/orpipe/valves").json()
    check(
        str(stored.get("API_KEY", "")).startswith("encrypted:")
        and MOCK_KEY not in json.dumps(stored),
        "API_KEY stored encrypted",
    )

    models = client.get("/api/models").json().get("data", [])
    ours = [m["id"] for m in models if m["id"].startswith("orpipe.")]
    check(len(ours) > 0, f"{len(ours)} orpipe models listed, e.g. {ours[:3]}")
    check("orpipe.mock.text" in ours, "mock text model is listed")


def api_chats(client: httpx.Client) -> None:
    """Plain and reasoning chats through ``/api/chat/completions``, compared with the mock."""
    text, _, lines = stream_chat(client, "orpipe.mock.text")
    want = plan("text", {}).text
    check(
        text == want,
        f"streamed text equals the mock's ({len(text)} chars, {len(lines)} chunks): {text[:60]!r}…",
    )
    usage = [c["usage"] for c in lines if c.get("usage")]
    check(bool(usage), f"usage reached the HTTP stream: {usage[-1] if usage else None}")

    text, reasoning, _ = stream_chat(client, "orpipe.mock.reasoning")
    check(bool(reasoning), f"reasoning streamed as reasoning_content ({len(reasoning)} chars)")
    check(text == plan("reasoning", {}).text, f"reasoning model's answer ({len(text)} chars)")


def attachments(client: httpx.Client, base_url: str) -> None:
    """An uploaded image reaches the model inline; a generated one is stored and served."""
    png = base64.b64decode(plan("images", {}).images[0])
    uploaded = client.post(
        "/api/v1/files/",
        params={"process": "false"},
        files={"file": ("square.png", png, "image/png")},
    )
    check(uploaded.status_code == 200, f"PNG uploaded to Open WebUI (HTTP {uploaded.status_code})")
    file_id = uploaded.json()["id"]
    before = mock_stats(base_url)
    content: list[dict[str, Any]] = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"/api/v1/files/{file_id}/content"}},
    ]
    text, _, _ = stream_chat(client, "orpipe.mock.images", content)
    after = mock_stats(base_url)
    images = _grown(before, after, "input_image")
    inline = after["input_parts_inline"] - before["input_parts_inline"]
    check(images == 1 and inline >= 1, f"the uploaded image reached the model inline ({images})")
    links = re.findall(r"!\[[^\]]*\]\((/api/v1/files/[^)]+/content)\)", text)
    check(len(links) == 1, f"the generated image is shown as a link to Open WebUI: {links}")
    served = client.get(links[0])
    check(
        served.status_code == 200 and served.content == png,
        f"Open WebUI serves the generated image (HTTP {served.status_code}, "
        f"{len(served.content)} bytes)",
    )


def browser(owui: str, base_url: str, out_dir: Path) -> None:
    """The browser step (``bench.owui_browser``): every check printed, then one verdict."""
    say(f"browser step: headless Chromium, screenshots under {out_dir}")
    try:
        results = trio.run(
            functools.partial(
                run_browser_checks,
                owui,
                base_url.removesuffix("/api/v1"),
                email=ADMIN_EMAIL,
                password=ADMIN_PASSWORD,
                out_dir=out_dir,
                say=say,
            )
        )
    except ChromiumMissing as exc:
        raise SmokeFailure(f"browser step: {exc}") from exc
    failed = [r.what for r in results if not r.ok]
    if failed:
        raise SmokeFailure(
            f"browser step: {len(failed)} of {len(results)} checks failed (FAIL lines above)"
        )
    say(f"browser step: all {len(results)} checks passed; screenshots in {out_dir}")


def mock_stats(base_url: str) -> dict[str, Any]:
    root = base_url.removesuffix("/api/v1")
    stats: dict[str, Any] = httpx.get(f"{root}/mock/stats", timeout=10).json()
    return stats


def _grown(before: dict[str, Any], after: dict[str, Any], kind: str) -> int:
    count: int = after["input_parts_by_type"].get(kind, 0)
    return count - int(before["input_parts_by_type"].get(kind, 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--venv",
        type=Path,
        default=Path.home() / ".cache" / "orpipe-owui-venv",
        help="virtualenv for Open WebUI, outside the repository (created if missing)",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--browser-only",
        action="store_true",
        help="after installing the Function, run only the browser step (quick iteration)",
    )
    only.add_argument("--no-browser", action="store_true", help="skip the browser step")
    only.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="instead: N uvicorn workers on PostgreSQL and Redis, two-turn reasoning chats "
        "(bench.owui_workers_smoke)",
    )
    parser.add_argument(
        "--chats", type=int, default=20, help="with --workers: how many two-turn chats"
    )
    args = parser.parse_args(argv)
    steps = Steps(api_chats=not args.browser_only, browser=not args.no_browser)
    venv: Path = args.venv.resolve()
    if REPO in venv.parents:
        parser.error("the Open WebUI virtualenv must live outside the repository")
    if shutil.which("python3.11") is None and sys.version_info[:2] != (3, 11):
        say("note: Open WebUI 0.12.4 is tested on Python 3.11")
    try:
        if args.workers is not None:
            # Imported here: that module builds on this one.
            from orpipe.bench.owui_workers_smoke import run_workers  # noqa: PLC0415

            run_workers(ensure_venv(venv), workers=args.workers, chats=args.chats)
        else:
            run(ensure_venv(venv), steps)
    except (SmokeFailure, BenchError) as exc:
        say(f"FAILED: {exc}")
        return 1
    say("all checks passed")
    return 0


if __name__ == "__main__":
    # The importable module's main, not this ``__main__`` copy's: bench.owui_workers_smoke
    # imports this module by name, and the SmokeFailure it raises is that module's class.
    from orpipe.bench import owui_smoke

    raise SystemExit(owui_smoke.main())
