#!/usr/bin/env python3
"""Open leaderboard pages in headless Chromium and check that they work as a visitor sees them.

For each ``index.html``: no console error, warning or uncaught exception; no resource that fails to load; every
table has rows; every image has loaded (naturalWidth > 0); clicking a numeric header sorts the rows both ways.
Talks to Chromium through the DevTools protocol over a pipe (``--remote-debugging-pipe``), so it needs nothing but
the standard library and a ``chromium`` binary (Debian: ``apt-get install chromium``).

    python scripts/check_leaderboard_html.py leaderboards/*/index.html [--screenshot-dir DIR]

Exit status 0 when every page passes; 1 naming each failure; 3 when no Chromium is installed.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--disable-extensions", "--mute-audio", "--window-size=1280,900", "--remote-debugging-pipe")

# Evaluated in the page once it has loaded: what a visitor would see.
PROBE = r"""
(() => {
  const tables = Array.from(document.querySelectorAll("table")).map(t => ({
    caption: (t.closest("div") && t.closest("div").previousElementSibling || {}).textContent || "",
    headers: Array.from(t.tHead ? t.tHead.rows[0].cells : []).map(c => c.textContent),
    rows: t.tBodies.length ? t.tBodies[0].rows.length : 0,
    visible: t.getBoundingClientRect().height > 0,
  }));
  const images = Array.from(document.images).map(i => ({
    src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
  }));
  return JSON.stringify({title: document.title, tables, images});
})()
"""

# Click the header of the first column whose cells all sort as numbers; return the column read after each click.
SORT_PROBE = r"""
(() => {
  const table = document.querySelector("table.sortable");
  if (!table || table.tBodies[0].rows.length < 2) { return JSON.stringify({skipped: true}); }
  const heads = table.tHead.rows[0].cells;
  const read = col => Array.from(table.tBodies[0].rows).map(r => r.cells[col].getAttribute("data-sort"));
  for (let col = 0; col < heads.length; col++) {
    const values = read(col);
    if (values.every(v => v !== "" && !isNaN(Number(v)))) {
      heads[col].click();
      const first = read(col).map(Number);
      heads[col].click();
      const second = read(col).map(Number);
      return JSON.stringify({column: heads[col].textContent, first, second,
                             state: heads[col].getAttribute("aria-sort")});
    }
  }
  return JSON.stringify({skipped: true});
})()
"""


class ChromiumMissing(RuntimeError):
    pass


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit if shutil.which(explicit) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """A headless Chromium driven over the DevTools pipe (fd 3: commands in, fd 4: replies and events out)."""

    def __init__(self, binary: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="lb-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire_pipe():
            # Move both ends above 3 and 4 first, so that placing one cannot clobber the other.
            high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)  # dup2 leaves 3 and 4 inheritable
            os.dup2(high_w, 4)

        # close_fds=False keeps the new 3 and 4 open across exec; Python opens every other fd close-on-exec.
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire_pipe, close_fds=False,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str | None = None) -> dict:
        for index, event in enumerate(self.events):
            if event.get("method") == method and (session is None or event.get("sessionId") == session):
                return self.events.pop(index)
        while True:
            event = self._read()
            if event.get("method") == method and (session is None or event.get("sessionId") == session):
                return event
            self.events.append(event)

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe (did it start?)")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


def check_page(browser: Browser, page: Path, screenshot: Path | None = None) -> tuple[list[str], dict]:
    """Load ``page``; return (failures, what the page showed)."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log"):
        browser.send(f"{domain}.enable", session=session)
    browser.events.clear()
    browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
    browser.wait_event("Page.loadEventFired", session=session)
    shown = json.loads(browser.send("Runtime.evaluate", {"expression": PROBE, "returnByValue": True},
                                    session=session)["result"]["value"])
    sort = json.loads(browser.send("Runtime.evaluate", {"expression": SORT_PROBE, "returnByValue": True},
                                   session=session)["result"]["value"])
    if screenshot is not None:
        metrics = browser.send("Page.getLayoutMetrics", session=session)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = browser.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}},
            session=session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    # Drain what arrived with the last replies, then collect every complaint the page raised.
    browser.send("Runtime.evaluate", {"expression": "1"}, session=session)
    failures = []
    for event in browser.events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            failures.append(f"uncaught exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            failures.append(f"console.{params['type']}: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            entry = params["entry"]
            failures.append(f"{entry['level']}: {entry.get('text')} {entry.get('url', '')}".strip())
    browser.send("Target.closeTarget", {"targetId": target})
    browser.events.clear()

    if not shown["tables"]:
        failures.append("no table on the page")
    for table in shown["tables"]:
        if table["rows"] == 0 or not table["visible"]:
            failures.append(f"table '{table['caption'].strip()}' shows no rows")
    for image in shown["images"]:
        if not image["complete"] or image["width"] == 0:
            failures.append(f"image {image['src']} did not load")
    if not sort.get("skipped"):
        if sort["first"] != sorted(sort["first"]) or sort["second"] != sorted(sort["second"], reverse=True):
            failures.append(f"clicking '{sort['column']}' does not sort the rows: {sort}")
    shown["sort"] = sort
    return failures, shown


def check_pages(pages: list[Path], screenshot_dir: Path | None = None) -> dict[Path, tuple[list[str], dict]]:
    binary = find_chromium()
    if binary is None:
        raise ChromiumMissing("no Chromium found (tried $CHROMIUM, " + ", ".join(CANDIDATES)
                              + "); on Debian: apt-get install -y chromium")
    browser = Browser(binary)
    try:
        browser.send("Target.setDiscoverTargets", {"discover": False})
        results = {}
        for page in pages:
            shot = (screenshot_dir / f"{page.parent.name}.png") if screenshot_dir else None
            results[page] = check_page(browser, page, shot)
        return results
    finally:
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", type=Path, help="HTML pages (default: leaderboards/*/index.html)")
    parser.add_argument("--screenshot-dir", type=Path, help="save a full-page PNG of each page here")
    args = parser.parse_args(argv)
    pages = args.pages or sorted(Path("leaderboards").glob("*/index.html"))
    if not pages:
        print("no pages to check: run 'harness leaderboard build' first", file=sys.stderr)
        return 1
    if args.screenshot_dir:
        args.screenshot_dir.mkdir(parents=True, exist_ok=True)
    try:
        results = check_pages(pages, args.screenshot_dir)
    except ChromiumMissing as exc:
        print(f"skipped: {exc}", file=sys.stderr)
        return 3
    bad = 0
    for page, (failures, shown) in results.items():
        status = "ok" if not failures else "FAILED"
        print(f"{page}: {status} ({len(shown['tables'])} tables, {len(shown['images'])} images)")
        for failure in failures:
            print(f"  {failure}")
        bad += bool(failures)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
