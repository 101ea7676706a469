"""LiteLLM's proxy (a real OpenAI-compatible server that nobody here wrote) on 127.0.0.1, for tests.

Each model of the config answers with a fixed ``mock_response``, so the proxy makes no upstream
call: it builds the completion, the SSE chunks and the usage numbers itself, and a mock response
naming a LiteLLM exception (``litellm.RateLimitError``) makes it answer with that error's status.

    with LiteLLMProxy({"mock-gpt": "Paris."}) as proxy:
        OpenAICompatibleProvider("p", proxy.base_url, "mock-gpt", api_key=proxy.key)

Starting it takes a few seconds (it imports FastAPI and all of LiteLLM), so tests share one per module.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["LiteLLMProxy", "litellm_available"]


def litellm_available() -> bool:
    try:
        import litellm.proxy  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiteLLMProxy:
    """``litellm --config`` as a child process on a free loopback port; stopped on exit."""

    def __init__(self, models: dict[str, str], *, startup_timeout: float = 240.0) -> None:
        self.models = dict(models)
        self.port = _free_port()
        self.key = "sk-" + secrets.token_hex(24)  # the proxy refuses to start without a strong master key
        self.startup_timeout = startup_timeout
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _config(self) -> dict[str, Any]:
        return {
            "model_list": [
                {
                    "model_name": name,
                    "litellm_params": {"model": f"openai/{name}", "api_key": "unused", "mock_response": text},
                }
                for name, text in self.models.items()
            ],
            "litellm_settings": {"telemetry": False, "drop_params": True, "num_retries": 0},
            "router_settings": {"num_retries": 0, "retry_after": 0},  # our client does the retrying
        }

    def start(self) -> LiteLLMProxy:
        self._dir = Path(tempfile.mkdtemp(prefix="sibyl-litellm-"))
        config = self._dir / "config.yaml"
        config.write_text(json.dumps(self._config()), encoding="utf-8")  # JSON is YAML
        env = {
            k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("LITELLM")
        }
        env.update(
            {
                "LITELLM_MASTER_KEY": self.key,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list at start
                "LITELLM_TELEMETRY": "False",
                "NO_PROXY": "127.0.0.1,localhost",
                "HOME": str(self._dir),
            }
        )
        self._log = open(self._dir / "proxy.log", "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "litellm.proxy.proxy_cli",
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num_workers",
                "1",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self._dir,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the LiteLLM proxy exited at start:\n{self.log_tail()}")
            health = f"http://127.0.0.1:{self.port}/health/liveliness"
            with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=1):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the LiteLLM proxy did not answer within {self.startup_timeout} s")

    def log_tail(self, n: int = 4000) -> str:
        if self._dir is None or not (self._dir / "proxy.log").exists():
            return ""
        return (self._dir / "proxy.log").read_text(encoding="utf-8", errors="replace")[-n:]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if getattr(self, "_log", None) is not None:
            self._log.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LiteLLMProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
