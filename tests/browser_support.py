"""Support code for the end-to-end JupyterLab browser test (tests/test_browser.py).

Three pieces, each usable on its own:

- `JupyterLab` / `start_jupyterlab`: a real JupyterLab server from the project's own Python environment on
  127.0.0.1 and a free port, token authentication on (the token is read from the server's runtime file), serving a
  temporary folder, with its config, settings, workspaces and runtime files in temporary folders too.
- `find_chromium` / `launch_chromium`: a headless system Chromium (Debian's `chromium` package) driven by Playwright,
  with a fresh profile.
- `NotebookPage`: what a user does in the JupyterLab UI: open a notebook, Run > Run All Cells, wait for the kernel,
  find the rendered ipywidgets, drag a slider handle with the mouse, pick a dropdown entry with the keyboard, read
  back images and texts, take screenshots.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Flags for a quiet, offline, reproducible headless Chromium (no update checks, sync or field trials phoning home).
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")

# JupyterLab user settings for the test profile: no news / update-check toasts (they would need the internet and
# would cover part of the screenshots), no autosave.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    # The served notebooks are throw-away copies; saving them would only cost time.
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def widget_repr_pattern() -> str:
    """Regex for the text/plain repr of any widget class (ipywidgets' and the project's), e.g. "VBox(children=...".

    An output showing such text means the widget manager did not render the widget (JupyterLab fell back to the
    plain-text part of the output). Class names are collected from the installed packages, so other reprs that
    merely look similar (matplotlib's "Text(0.5, 1.0, ...)", dataclasses) do not match.
    """
    import ipywidgets

    with contextlib.suppress(ImportError):
        import seresnet.widgets  # noqa: F401 - registers the project's widget subclasses

    names, todo = set(), [ipywidgets.DOMWidget]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    names.add("interactive")
    # Widget reprs use keyword arguments only ("IntSlider(value=3, ...)", "Output()"); matplotlib's Text does not.
    return r"^\s*(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\((\w+=|\))"


class BrowserTestError(AssertionError):
    """A check in the browser test failed (raised with a readable message)."""


# --------------------------------------------------------------------------------------------------------------------
# Chromium
# --------------------------------------------------------------------------------------------------------------------


def find_chromium() -> str | None:
    """Path of a usable system Chromium binary, or None.

    `SERESNET_CHROMIUM` (an executable path) wins; then Debian's /usr/bin/chromium; then `chromium` on PATH.
    """
    override = os.environ.get("SERESNET_CHROMIUM")
    candidates = [override] if override else [*CHROMIUM_CANDIDATES, shutil.which("chromium") or ""]
    for cand in candidates:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def launch_chromium(playwright: Any, executable: str, user_data_dir: Path, viewport: tuple[int, int] = (1400, 1000)):
    """Launch headless Chromium at `executable` with a fresh profile in `user_data_dir`; returns a BrowserContext.

    `playwright` is the object from `sync_playwright().start()`. Playwright's own browser download is not used.
    """
    args = list(CHROMIUM_ARGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(0, "--no-sandbox")  # Chromium refuses to start its sandbox as root.
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=executable,
        headless=True,
        args=args,
        viewport={"width": viewport[0], "height": viewport[1]},
        device_scale_factor=1,
        timeout=60_000,
    )


# --------------------------------------------------------------------------------------------------------------------
# JupyterLab server
# --------------------------------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago (the server is still told to fail rather than pick another)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class JupyterLab:
    """A running JupyterLab server started by `start_jupyterlab`.

    url: base URL ending in "/", token: the server's auth token (read from its runtime file, never disabled),
    root_dir: the folder it serves, process: the server process, log_path: its stdout+stderr.
    """

    url: str
    token: str
    root_dir: Path
    process: subprocess.Popen
    log_path: Path
    runtime_dir: Path
    _descendants: set[int] = field(default_factory=set)

    def lab_url(self, path: str, workspace: str | None = None) -> str:
        """URL that opens `path` (relative to root_dir) in JupyterLab, logging in with the token.

        With `workspace`, a named workspace reset to empty, so tabs of earlier pages are not restored (each restored
        notebook tab would start a kernel of its own).
        """
        if workspace:
            return f"{self.url}lab/workspaces/{workspace}/tree/{path}?reset&token={self.token}"
        return f"{self.url}lab/tree/{path}?token={self.token}"

    def api(self, method: str, path: str, token: bool | str = True, timeout: float = 10.0) -> tuple[int, Any]:
        """Call the REST API (`path` like "api/sessions"); returns (HTTP status, decoded JSON body or None).

        token: True sends the server's token, False none, a string sends that string instead.
        """
        req = urllib.request.Request(self.url + path, method=method)
        if token:
            req.add_header("Authorization", f"token {self.token if token is True else token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read()
                return resp.status, (json.loads(body) if body else None)
        except urllib.error.HTTPError as err:
            return err.code, None

    def log_tail(self, n: int = 40) -> str:
        """Last `n` lines of the server log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no server log>"

    def kernel_processes(self) -> list[Any]:
        """psutil.Process objects of the ipykernel processes started by this server."""
        import psutil

        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if any("ipykernel" in part for part in child.cmdline()):
                    out.append(child)
        return out

    def kernel_widget_state(self, notebook: str, timeout: float = 60.0) -> dict[str, list]:
        """Ask the notebook's kernel (side channel, not the browser) what its widgets hold right now.

        Returns {"controls": [[kind, description, value]], "texts": [str]}: kind "slider" (value float; for a
        selection slider the selected label, as a float where it is a number) or
        "dropdown" (value = the selected option's label); texts = HTML / Label widget values with tags removed.
        This is the oracle for "the page shows what the kernel computed".
        """
        from jupyter_client import BlockingKernelClient

        _, sessions = self.api("GET", "api/sessions")
        ours = [s for s in sessions or [] if s.get("path") == notebook and s.get("kernel")]
        if not ours:
            raise BrowserTestError(f"no running kernel for {notebook}")
        client = BlockingKernelClient(connection_file=str(self.runtime_dir / f"kernel-{ours[0]['kernel']['id']}.json"))
        client.load_connection_file()
        client.start_channels()
        chunks: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                chunks.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                chunks.append("ERROR " + "\n".join(msg["content"]["traceback"]))

        try:
            client.wait_for_ready(timeout=timeout)
            client.execute_interactive(_KERNEL_PROBE, store_history=False, timeout=timeout, output_hook=hook)
        finally:
            client.stop_channels()
        text = "".join(chunks)
        marker = "E2E-PROBE"
        if marker not in text:
            raise BrowserTestError(f"kernel widget probe failed: {text[-2000:]}")
        return json.loads(text.split(marker, 1)[1])

    def shutdown_sessions(self) -> None:
        """Shut down every notebook session (and so its kernel) through the REST API; errors are ignored."""
        with contextlib.suppress(Exception):
            status, sessions = self.api("GET", "api/sessions")
            for sess in sessions or []:
                self.api("DELETE", f"api/sessions/{sess['id']}")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it started (kernels run in their own sessions, so they are tracked)."""
        self._remember_descendants()
        self.shutdown_sessions()
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                self.api("POST", "api/shutdown", timeout=5)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGTERM)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    _signal_group(self.process, signal.SIGKILL)
                    self.process.wait(timeout=10)
        _kill_pids(self._descendants)

    def _remember_descendants(self) -> None:
        try:
            import psutil

            for child in psutil.Process(self.process.pid).children(recursive=True):
                self._descendants.add(child.pid)
        except Exception:  # noqa: BLE001 - psutil missing or server gone: nothing more to track
            pass


# Run in the kernel by JupyterLab.kernel_widget_state; a function so the user's namespace is left as it was.
_KERNEL_PROBE = r"""
def __e2e_probe():
    import html, json, re
    import ipywidgets as W
    from ipywidgets.widgets.widget import _instances
    controls, texts = [], []
    for w in list(_instances.values()):
        if isinstance(w, (W.IntSlider, W.FloatSlider)):
            controls.append(["slider", w.description, float(w.value)])
        elif isinstance(w, W.SelectionSlider):  # its readout is the option's label (here image numbers)
            try:
                controls.append(["slider", w.description, float(w.label)])
            except (TypeError, ValueError):
                controls.append(["slider", w.description, w.label])
        elif isinstance(w, W.Dropdown):
            controls.append(["dropdown", w.description, w.label])
        elif isinstance(w, (W.HTML, W.Label)) and not isinstance(w, W.HTMLMath):
            texts.append(html.unescape(re.sub(r"<[^>]*>", "", str(w.value))))
    print("E2E-PROBE" + json.dumps({"controls": controls, "texts": texts}))
__e2e_probe()
del __e2e_probe
"""


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _kill_pids(pids: set[int]) -> None:
    """Kill the given processes (ours: children of the server we started) if they are still alive."""
    try:
        import psutil
    except ImportError:
        return
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            proc.terminate()
            procs.append(proc)
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the test process dies, even if it is killed outright.

    The server then shuts its kernels down itself, so a hard-killed test run leaves nothing behind.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def start_jupyterlab(root_dir: Path, state_dir: Path, python: str | None = None, timeout: float = 90.0) -> JupyterLab:
    """Start JupyterLab serving `root_dir` on 127.0.0.1 (free port, token auth on); wait until its API answers.

    state_dir: an empty folder for the server's runtime/config/settings/workspace files and its log.
    python: interpreter of the environment to run (default: the one running the tests, i.e. the project venv),
    so the default "python3" kernel is that interpreter too.
    Raises RuntimeError with the server log if it does not come up within `timeout` seconds.
    """
    python = python or sys.executable
    dirs = {name: state_dir / name for name in ("runtime", "config", "settings", "workspaces", "ipython")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for rel, values in LAB_SETTINGS.items():
        target = dirs["settings"] / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    from seresnet.lab import lab_environment

    env = lab_environment()  # the settings `python -m seresnet.lab` gives users (widget state saved)
    env.update(
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_CONFIG_DIR=str(dirs["config"]),  # ignore any personal jupyter_server_config
        JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        IPYTHONDIR=str(dirs["ipython"]),  # ignore personal IPython startup files
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("JUPYTER_TOKEN", None)  # the server must generate its own token
    log_path = state_dir / "jupyterlab.log"
    last_error = ""
    for _attempt in range(3):  # the free port can be taken between free_port() and the server binding it
        port = free_port()
        cmd = [
            python, "-m", "jupyter", "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root_dir}",
            "--LabApp.extension_manager=readonly",  # no PyPI queries
        ]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd, cwd=root_dir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so a stuck server can be killed as a group
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        server = _wait_for_server(proc, dirs["runtime"], root_dir, log_path, timeout)
        if server is not None:
            return server
        last_error = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(f"JupyterLab did not start within {timeout:.0f} s; server log ({log_path}):\n{last_error}")


def _wait_for_server(
    proc: subprocess.Popen, runtime_dir: Path, root_dir: Path, log_path: Path, timeout: float
) -> JupyterLab | None:
    deadline = time.monotonic() + timeout
    info_file = runtime_dir / f"jpserver-{proc.pid}.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        if info_file.exists():
            try:
                info = json.loads(info_file.read_text())
            except json.JSONDecodeError:  # being written
                info = None
            if info and info.get("token"):
                server = JupyterLab(info["url"], info["token"], root_dir, proc, log_path, runtime_dir)
                status, _ = server.api("GET", "api/status", timeout=5)
                if status == 200:
                    return server
        time.sleep(0.5)
    return None


@contextlib.contextmanager
def jupyterlab(root_dir: Path, python: str | None = None) -> Iterator[JupyterLab]:
    """Context manager: a running `JupyterLab` on `root_dir`; stopped (kernels included) on exit, even on errors."""
    state_dir = Path(tempfile.mkdtemp(prefix="seresnet-jlab-state-"))
    server = start_jupyterlab(root_dir, state_dir, python=python)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


SIBLING_MAX_BYTES = 50 * 2**20


def copy_notebook(src: Path, dst_dir: Path) -> Path:
    """Copy notebook `src` into `dst_dir` with all outputs and execution counts removed; returns the new path.

    Starting from a clean notebook means every widget and image seen in the browser was produced live by this run.
    The other files and folders next to it (not notebooks, not checkpoints; files up to 50 MiB) are copied too, so
    paths relative to the notebook work, while anything the notebook writes stays out of the repository.
    """
    src, dst_dir = Path(src), Path(dst_dir)
    nb = json.loads(src.read_text())
    if not isinstance(nb, dict) or "cells" not in nb:
        raise ValueError(f"{src} is not a notebook (expected nbformat JSON with a 'cells' list)")
    for cell in nb["cells"]:
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.get("metadata", {}).pop("widgets", None)  # saved widget state would render stale views

    def skip(folder: str, names: list[str]) -> set[str]:
        def big(name: str) -> bool:
            path = os.path.join(folder, name)
            return os.path.isfile(path) and os.path.getsize(path) > SIBLING_MAX_BYTES

        return {n for n in names if n in {".ipynb_checkpoints", "__pycache__"} or n.endswith(".ipynb") or big(n)}

    siblings = [p.name for p in src.parent.iterdir()]
    for name in set(siblings) - skip(str(src.parent), siblings):
        sib = src.parent / name
        if sib.is_dir():
            shutil.copytree(sib, dst_dir / name, ignore=skip, dirs_exist_ok=True)
        elif sib.is_file():
            shutil.copy2(sib, dst_dir / name)
    dst = dst_dir / src.name
    dst.write_text(json.dumps(nb, indent=1))
    return dst


# --------------------------------------------------------------------------------------------------------------------
# The notebook UI
# --------------------------------------------------------------------------------------------------------------------

# JavaScript run in the page. Kept here (not inline) so the Python reads as the user's steps.

_JS_CELL_STATE = """
(panel) => {
  const cells = Array.from(panel.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell'));
  const out = {total: 0, done: 0, busy: 0, queuedOrIdle: 0, prompts: []};
  for (const cell of cells) {
    const src = (cell.querySelector('.jp-InputArea-editor .cm-content') || {}).textContent || '';
    if (!src.trim()) continue;  // empty cells are never executed
    out.total += 1;
    const prompt = ((cell.querySelector('.jp-InputPrompt') || {}).textContent || '').trim();
    out.prompts.push(prompt);
    if (/^\\[\\d+\\]:$/.test(prompt)) out.done += 1;
    else if (prompt.includes('*')) out.busy += 1;
    else out.queuedOrIdle += 1;
  }
  const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  out.kernel = ind ? ind.dataset.status : null;
  return out;
}
"""

_JS_OUTPUT_PROBLEMS = r"""
(panel, [widgetMime, reprPattern]) => {
  const re = new RegExp(reprPattern);
  const tracebackRe = /Traceback \(most recent call last\)|Cell In\[\d+\], line \d+/;
  const errors = [], widgetErrors = [], reprs = [];
  for (const el of panel.querySelectorAll('.jp-OutputArea-output')) {
    const mime = el.dataset.mimeType;
    const text = el.textContent || '';  // not innerText: no layout pass on every poll
    // JupyterLab renders error outputs with the stderr MIME type, so a traceback is recognised by its text;
    // plain stderr (warnings, progress bars) is not an error.
    if (mime === 'application/vnd.jupyter.error' ||
        (mime === 'application/vnd.jupyter.stderr' && tracebackRe.test(text))) errors.push(text.slice(0, 3000));
    if (text.includes('Error displaying widget') || text.includes('Error rendering output')) {
      widgetErrors.push(text.slice(0, 500));
    }
    if (mime === 'text/plain' && re.test(text)) reprs.push(text.slice(0, 300));
  }
  return {errors, widgetErrors, reprs, views: panel.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').length};
}
"""

# Top-level widget views that contain at least one image: the interactive "apps" of a notebook.
_JS_MARK_APPS = """
(panel) => {
  const tops = Array.from(panel.querySelectorAll('.jp-OutputArea-output > .jupyter-widgets'));
  const apps = [];
  tops.forEach((el) => {
    if (!el.querySelector('img.widget-image')) return;
    el.dataset.e2eApp = String(apps.length);
    apps.push({
      sliders: el.querySelectorAll('.widget-slider .noUi-handle').length,
      dropdowns: el.querySelectorAll('.widget-dropdown select:not([disabled])').length,
      images: el.querySelectorAll('img.widget-image').length,
    });
  });
  return apps;
}
"""

# Images of an app: SHA-256 of the bytes behind each <img> (the src is a fresh blob: URL on every update, so the
# bytes are compared, not the URL) and its decoded size.
_JS_IMAGES = """
async (app) => {
  const hex = (buf) => Array.from(new Uint8Array(buf)).map((b) => b.toString(16).padStart(2, '0')).join('');
  const out = [];
  for (const img of app.querySelectorAll('img.widget-image')) {
    let digest = null;
    try {
      const buf = await (await fetch(img.src)).arrayBuffer();
      digest = hex(await crypto.subtle.digest('SHA-256', buf)) + ':' + buf.byteLength;
    } catch (e) {
      digest = 'unreadable:' + img.src;  // blob revoked mid-update; the next poll reads the new one
    }
    out.push({digest, width: img.naturalWidth, height: img.naturalHeight, complete: img.complete});
  }
  return out;
}
"""

# Texts a person reads in an app: the contents of HTML and Label widgets (not the controls' own descriptions).
_JS_TEXTS = """
(app) => Array.from(app.querySelectorAll('.widget-html-content, .widget-label-basic')).map((el) => el.innerText)
"""

# Description label and shown value of a control (slider handle's widget or <select>).
_JS_CONTROL = """
(el) => {
  const w = el.closest('.widget-slider, .widget-dropdown');
  const label = w.querySelector(':scope > label.widget-label');
  const shown = el.tagName === 'SELECT' ? (el.selectedOptions[0] || {}).text : el.getAttribute('aria-valuenow');
  return {description: label ? label.innerText.trim() : '', shown: shown};
}
"""


# Scroll the first cell with a traceback, else the first cell still running ([*]), to the top of the view.
_JS_SCROLL_TO_TROUBLE = r"""
(panel) => {
  const cells = Array.from(panel.querySelectorAll('.jp-Notebook .jp-Cell'));
  const tb = /Traceback \(most recent call last\)|Cell In\[\d+\], line \d+/;
  const bad = cells.find((c) => Array.from(c.querySelectorAll('.jp-OutputArea-output'))
                                  .some((o) => tb.test(o.textContent || '')))
           || cells.find((c) => ((c.querySelector('.jp-InputPrompt') || {}).textContent || '').includes('*'));
  if (bad) bad.scrollIntoView({block: 'start'});
  return !!bad;
}
"""


@dataclass
class SliderState:
    """What the page shows for one slider: aria value, readout text and the handle position along the track."""

    value: float
    readout: str
    minimum: float
    maximum: float


class NotebookPage:
    """One notebook open in JupyterLab in a Playwright `page`, driven the way a person would."""

    def __init__(self, page: Any, server: JupyterLab, name: str, screenshot_dir: Path) -> None:
        self.page = page
        self.server = server
        self.name = name
        self.screenshot_dir = Path(screenshot_dir)
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        self.console_errors: list[str] = []
        self._repr_pattern: str | None = None
        self.timings: dict[str, float] = {}  # phase -> seconds since the NotebookPage was made
        self._t0 = time.monotonic()
        page.on("console", lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.console_errors.append(f"pageerror: {exc}"))

    def mark(self, phase: str) -> None:
        """Record that `phase` ended now (seconds since start), for the timing summary."""
        self.timings[phase] = round(time.monotonic() - self._t0, 1)

    # --- navigation -------------------------------------------------------------------------------------------------

    @property
    def panel(self) -> Any:
        """Locator of the notebook's panel (toolbar + cells) in the main area."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first

    def open(self, timeout: float = 180.0) -> None:
        """Open the notebook (URL lab/tree/<name>), accept a kernel-selection dialog if one appears, wait for idle.

        `timeout` covers all of it: page load, notebook render and kernel start.
        """
        deadline = time.monotonic() + timeout
        workspace = "e2e-" + re.sub(r"[^A-Za-z0-9_-]", "-", Path(self.name).stem)
        self.page.goto(self.server.lab_url(self.name, workspace), timeout=timeout * 1000)
        remaining_ms = max(1.0, deadline - time.monotonic()) * 1000
        self.page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(timeout=remaining_ms)
        while time.monotonic() < deadline:
            dialog = self.page.locator(".jp-Dialog .jp-mod-accept")
            if dialog.count():
                dialog.first.click()  # "Select Kernel" for a notebook without kernelspec metadata: take the default
            if self._kernel_ready():
                return
            time.sleep(0.5)
        raise BrowserTestError(f"kernel of {self.name} did not become idle within {timeout:.0f} s")

    def _kernel_ready(self) -> bool:
        """The server has a session for this notebook with an idle kernel, and the UI shows it connected and idle."""
        _, sessions = self.server.api("GET", "api/sessions")
        ours = [s for s in sessions or [] if s.get("path") == self.name and s.get("kernel")]
        if not ours or ours[0]["kernel"].get("execution_state") != "idle":
            return False
        kernel_name = self.panel.locator(".jp-Toolbar-kernelName, .jp-KernelName").first.inner_text().strip()
        status = self.panel.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute("data-status")
        return kernel_name != "No Kernel" and status == "idle"

    def hide_left_sidebar(self) -> None:
        """Collapse the file browser (View > Appearance > Show Left Sidebar) so the notebook gets the width."""
        if self.page.locator("#jp-left-stack:not(.lm-mod-hidden)").count():
            self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^View$")).click()
            self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Appearance$")).click()
            self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Show Left Sidebar$")).click()

    def run_all(self) -> None:
        """Run > Run All Cells from the menu bar."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

    def cell_state(self) -> dict[str, Any]:
        """Counts of non-empty code cells: total, done ([n]:), busy ([*]:), queuedOrIdle, plus kernel status."""
        return self.panel.evaluate(_JS_CELL_STATE)

    def output_problems(self) -> dict[str, Any]:
        """Error outputs, widget render errors, raw widget reprs, and the number of rendered widget views."""
        if self._repr_pattern is None:
            self._repr_pattern = widget_repr_pattern()
        return self.panel.evaluate(_JS_OUTPUT_PROBLEMS, [WIDGET_MIME, self._repr_pattern])

    def wait_until_executed(self, timeout: float) -> dict[str, Any]:
        """Wait until every non-empty code cell has an execution count and the kernel is idle.

        Fails early (with the traceback text) if a cell shows an error, since Run All stops there.
        """
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        seen_busy = False
        stalled_since = None
        while time.monotonic() < deadline:
            state = self.cell_state()
            seen_busy = seen_busy or state["busy"] > 0 or state["kernel"] == "busy"
            problems = self.output_problems()
            if problems["errors"] and state["busy"] == 0:
                raise BrowserTestError(f"a cell of {self.name} raised an error:\n{problems['errors'][0]}")
            if state["total"] and state["done"] == state["total"] and state["kernel"] == "idle":
                return state
            # Run All stops at a failing cell and un-queues the rest; if that happened without a recognisable
            # traceback, do not wait for the full timeout.
            if seen_busy and state["busy"] == 0 and state["kernel"] == "idle":
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 5.0:
                    raise BrowserTestError(f"{self.name}: Run All stopped early; prompts {state['prompts']}")
            else:
                stalled_since = None
            time.sleep(1.0)
        raise BrowserTestError(
            f"{self.name}: cells not all executed after {timeout:.0f} s (saw kernel busy: {seen_busy}); "
            f"prompts {state.get('prompts')}, kernel {state.get('kernel')}"
        )

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until the kernel indicator says idle and no cell shows [*]."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.cell_state()
            if state["kernel"] == "idle" and state["busy"] == 0:
                return
            time.sleep(0.25)
        raise BrowserTestError(f"{self.name}: kernel still busy after {timeout:.0f} s")

    # --- widgets ----------------------------------------------------------------------------------------------------

    def widget_apps(self) -> list[dict[str, int]]:
        """Tag the top-level widget views that contain an image (data-e2e-app="i") and count their controls."""
        return self.panel.evaluate(_JS_MARK_APPS)

    def app(self, index: int) -> Any:
        """Locator of widget app `index` as tagged by `widget_apps`."""
        return self.panel.locator(f'[data-e2e-app="{index}"]')

    def wait_for_widgets(self, timeout: float = 60.0) -> list[dict[str, int]]:
        """Wait until at least one widget app shows all its images decoded; returns `widget_apps()`."""
        deadline = time.monotonic() + timeout
        apps: list[dict[str, int]] = []
        while time.monotonic() < deadline:
            apps = self.widget_apps()
            if apps and all(img["width"] > 0 and img["complete"] for i in range(len(apps)) for img in self.images(i)):
                return apps
            time.sleep(0.5)
        problems = self.output_problems()
        raise BrowserTestError(
            f"{self.name}: no widget with a rendered image after {timeout:.0f} s "
            f"(widget views: {problems['views']}, widget errors: {problems['widgetErrors']}, "
            f"raw reprs: {problems['reprs']})"
        )

    def images(self, app_index: int) -> list[dict[str, Any]]:
        """Digest ("sha256:nbytes") and natural size of each image in app `app_index`."""
        return self.app(app_index).evaluate(_JS_IMAGES)

    def texts(self, app_index: int) -> list[str]:
        """Displayed texts of the HTML and Label widgets of app `app_index`."""
        return self.app(app_index).evaluate(_JS_TEXTS)

    def control(self, element: Any) -> dict[str, str]:
        """{"description", "shown"} of a slider handle (shown = aria value) or a <select> (shown = option text)."""
        return element.evaluate(_JS_CONTROL)

    def wait_for_update(self, app_index: int, before: list[str], timeout: float = 90.0) -> list[str]:
        """Wait until an image digest of the app differs from `before`, then until kernel and images are settled."""
        deadline = time.monotonic() + timeout
        digests = before
        while time.monotonic() < deadline:
            digests = [img["digest"] for img in self.images(app_index)]
            if digests != before and not any(d.startswith("unreadable") for d in digests):
                break
            time.sleep(0.25)
        else:
            return digests
        # Settle: a drag can queue several updates; wait for idle and two identical reads in a row.
        self.wait_idle(timeout=max(5.0, deadline - time.monotonic()))
        prev = None
        while time.monotonic() < deadline:
            digests = [img["digest"] for img in self.images(app_index)]
            if digests == prev and not any(d.startswith("unreadable") for d in digests):
                break
            prev = digests
            time.sleep(0.5)
        return digests

    def slider_state(self, handle: Any) -> SliderState:
        """Read a noUiSlider handle's aria value and the readout text next to it."""
        data = handle.evaluate(
            """(h) => {
                const w = h.closest('.widget-slider');
                const r = w.querySelector('.widget-readout');
                return {value: h.getAttribute('aria-valuenow'), min: h.getAttribute('aria-valuemin'),
                        max: h.getAttribute('aria-valuemax'), readout: r ? r.innerText.trim() : ''};
            }"""
        )
        return SliderState(float(data["value"]), data["readout"], float(data["min"]), float(data["max"]))

    def drag_slider(self, handle: Any, fraction: float) -> None:
        """Drag a slider handle with the mouse to `fraction` (0..1) of its track, like a person would."""
        handle.scroll_into_view_if_needed()
        track = handle.locator("xpath=ancestor::div[contains(@class, 'noUi-target')]").first
        hbox, tbox = handle.bounding_box(), track.bounding_box()
        if hbox is None or tbox is None:
            raise BrowserTestError(f"{self.name}: slider handle or track is not visible")
        x0, y0 = hbox["x"] + hbox["width"] / 2, hbox["y"] + hbox["height"] / 2
        x1 = tbox["x"] + fraction * tbox["width"]
        self.page.mouse.move(x0, y0)
        self.page.mouse.down()
        self.page.mouse.move(x1, y0, steps=12)
        self.page.mouse.up()

    def choose_next_option(self, select: Any) -> tuple[str, str]:
        """Pick the next entry of a dropdown: click it open, press ArrowDown (ArrowUp at the last entry), Enter.

        Returns (old value, new value) as the <select> reports them.
        """
        select.scroll_into_view_if_needed()
        options = select.evaluate("(s) => ({n: s.options.length, i: s.selectedIndex, value: s.value})")
        if options["n"] < 2:
            raise BrowserTestError(f"{self.name}: dropdown has fewer than two options")
        # Click opens the native option list; keys then go to that list (a focused but closed <select> would lose
        # ArrowDown to JupyterLab's command-mode shortcut "select cell below").
        select.click()
        key = "ArrowDown" if options["i"] < options["n"] - 1 else "ArrowUp"
        self.page.keyboard.press(key)
        self.page.keyboard.press("Enter")
        new_value = select.evaluate("(s) => s.value")
        return options["value"], new_value

    def screenshot(self, label: str, app_index: int | None = None) -> Path:
        """Save a screenshot of the visible page as <screenshot_dir>/<notebook stem>-<label>.png.

        With `app_index`, the app is first scrolled to the top of the notebook view so it is what the image shows.
        """
        if app_index is not None:
            self.app(app_index).evaluate("(el) => el.scrollIntoView({block: 'start'})")
            self.page.wait_for_timeout(300)  # let content-visibility windowing paint the scrolled-in cells
        path = self.screenshot_dir / f"{Path(self.name).stem}-{label}.png"
        self.page.screenshot(path=str(path))
        return path

    @contextlib.contextmanager
    def screenshot_on_failure(self) -> Iterator[None]:
        """Turn any failure inside the block into a BrowserTestError naming a screenshot of the page at that moment."""
        try:
            yield
        except Exception as exc:
            try:
                with contextlib.suppress(Exception):  # show the failing or still-running cell, if there is one
                    self.panel.evaluate(_JS_SCROLL_TO_TROUBLE)
                    self.page.wait_for_timeout(300)
                path = str(self.screenshot("FAILED"))
            except Exception as shot_exc:  # noqa: BLE001 - the page may be gone; still report the real failure
                path = f"<no screenshot: {shot_exc}>"
            console = "\n".join(self.console_errors[-10:]) or "<none>"
            raise BrowserTestError(
                f"{exc}\n\nscreenshot: {path}\nphases done (s): {self.timings}\n"
                f"browser console errors (last 10):\n{console}\n"
                f"server log tail:\n{self.server.log_tail(15)}"
            ) from exc
