"""Drive the real ComfyUI web page in headless Chromium (Python playwright, Debian's chromium).

``ComfyPage(url)`` opens the page a user would open, waits until the app has registered every
node type from ``/object_info``, and then lets a caller do what the user does: load a UI-format
workflow (``load``), read what the page made of it (``widget_values``, ``graph_to_prompt``) and
queue it (``queue``: the page's own ``app.queuePrompt``, returning the server's prompt id).
Console errors and uncaught page exceptions are collected in ``errors``. The browser is
closed on exit, also after an error. Playwright's own browser download does not work offline:
the Debian ``chromium`` package is used (``scripts/setup_browser.sh`` installs both).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

__all__ = ["CHROMIUM_ARGS", "ComfyPage", "LoadReport", "PageError", "chromium_path"]

log = logging.getLogger(__name__)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# Registered once per page: records the missing-node list the page builds while loading.
_WATCH_MISSING = """() => {
  window.__actMissing = null;
  if (!window.__actWatching) {
    window.__actWatching = true;
    window.app.registerExtension({name: 'act.tests.missing-nodes',
      async afterConfigureGraph(missing) { window.__actMissing = missing || []; }});
  }
}"""
_WIDGETS = """() => Object.fromEntries(window.app.graph.nodes.map(n => [String(n.id), {
  type: n.type, known: n.type in LiteGraph.registered_node_types, has_errors: !!n.has_errors,
  widgets: Object.fromEntries((n.widgets || []).map(w => [w.name, w.value]))}]))"""


class PageError(RuntimeError):
    """The page could not be opened, or did not do what was asked; carries the page's errors."""


def chromium_path() -> str:
    """Debian's chromium (or $ACT_CHROMIUM); PageError naming the set-up script if absent."""
    path = os.environ.get("ACT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        raise PageError(f"no Chromium at {path}: run scripts/setup_browser.sh (Debian "
                        "chromium + Python playwright), or set ACT_CHROMIUM")
    return path


@dataclass
class LoadReport:
    missing: list = field(default_factory=list)  # node types the page did not know
    errors: list[str] = field(default_factory=list)  # console errors while loading
    nodes: dict = field(default_factory=dict)  # id -> {type, known, has_errors, widgets}


class ComfyPage:
    """The ComfyUI page at ``url`` in headless Chromium; a context manager."""

    def __init__(self, url: str, timeout_s: float = 180.0):
        self.url = url
        self.timeout_ms = timeout_s * 1000
        self.errors: list[str] = []
        self._pw = self._browser = self._profile = self.page = None

    def __enter__(self) -> ComfyPage:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self) -> None:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as error:
            raise PageError("Python playwright is not installed: run "
                            "scripts/setup_browser.sh") from error
        self._profile = tempfile.mkdtemp(prefix="act-chromium-")  # a fresh --user-data-dir
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch_persistent_context(
            self._profile, executable_path=chromium_path(), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1600, "height": 1000})
        self.page = self._browser.pages[0] if self._browser.pages else self._browser.new_page()
        self.page.set_default_timeout(self.timeout_ms)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"console: {m.text} ({m.location.get('url', '')})"))
        self.page.on("pageerror", lambda e: self.errors.append(f"exception: {e}"))
        self.page.goto(self.url, wait_until="load")
        self.page.wait_for_function(
            "() => window.app && window.app.isGraphReady && window.LiteGraph && "
            "Object.keys(LiteGraph.registered_node_types).length > 0")
        self.page.evaluate(_WATCH_MISSING)
        # Nobody looks at the canvas: drawing it in software every frame costs a CPU core.
        self.page.evaluate("() => { window.app.canvas.pause_rendering = true; }")

    def close(self) -> None:
        """Close the browser and stop playwright; safe to call twice."""
        for step in (lambda: self._browser and self._browser.close(),
                     lambda: self._pw and self._pw.stop()):
            try:
                step()
            except Exception as error:
                log.warning("closing the browser: %s", error)
        for _ in range(20):  # Chromium may still be writing its profile for a moment
            if not self._profile or not os.path.exists(self._profile):
                break
            shutil.rmtree(self._profile, ignore_errors=True)
            time.sleep(0.1)
        self._browser = self._pw = self._profile = self.page = None

    def registered_types(self) -> set[str]:
        return set(self.page.evaluate("() => Object.keys(LiteGraph.registered_node_types)"))

    def load(self, workflow: dict) -> LoadReport:
        """``app.loadGraphData(workflow)``, as opening a file does; report what went wrong."""
        self.page.evaluate(_WATCH_MISSING)
        before = len(self.errors)
        self.page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        self.page.wait_for_function("() => window.__actMissing !== null")
        missing = self.page.evaluate(
            "() => window.__actMissing.map(m => typeof m === 'string' ? m : m.type)")
        return LoadReport(missing, self.errors[before:], self.page.evaluate(_WIDGETS))

    def graph_to_prompt(self) -> dict:
        """``await app.graphToPrompt()``: ``{"workflow": ..., "output": API graph}``."""
        return self.page.evaluate("async () => await window.app.graphToPrompt()")

    def queue(self) -> str:
        """Queue the loaded graph as the Run button does; return the server's prompt id."""
        with self.page.expect_response(lambda r: r.url.endswith("/prompt")
                                       and r.request.method == "POST") as response:
            self.page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        body = response.value.json()
        if response.value.status != 200 or "prompt_id" not in body:
            raise PageError(f"the server refused the page's prompt ({response.value.status}): "
                            f"{body}")
        return body["prompt_id"]
