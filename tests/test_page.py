"""The study page: ``energymeter.analysis.page.study_page`` and
``energymeter page``: one self-contained HTML file (no network, no scripts, no external
styles or fonts) with the comparison table, inline SVG figures, the runs table, the warnings
and the methods paragraph; everything from the runs escaped. A system test opens it in
headless Chromium (Debian's ``chromium``) through the DevTools protocol (a stdlib websocket
client): no console error, no request but the page itself, a screenshot, narrow screens and
print."""

from __future__ import annotations

import base64
import json
import math
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from energymeter.analysis import compare, comparison_table, comparison_warnings, find_runs
from energymeter.analysis.page import inline_svg, study_page
from energymeter.analysis.render import DIFF_LABEL
from energymeter.report import Report
from tests.test_cli import invoke
from tests.test_compare import _save, fake_report

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
HOSTILE = "<script>alert(1)</script>"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


def _study(seed: int = 1, hostile: bool = False) -> list[Report]:
    """Dense vs sparse, 5 seeds each and a warm-up of dense: CPU, DRAM and GPU energy, and
    val_acc logged against cumulative energy."""
    rng = random.Random(seed)
    runs = []
    for i in range(6):
        for method, scale, speed in (("dense", 1.0, 1.0), ("sparse", 0.62, 0.97)):
            if method == "sparse" and i == 5:
                continue
            energy = 1000.0 * scale * (1 + rng.gauss(0, 0.04))
            logs = tuple({"t_s": t, "energy_j": energy * t / 10,
                          "metrics": {"epoch": t, "val_acc": 0.5 + 0.46 * speed
                                      * math.sqrt(t / 10)}} for t in range(1, 11))
            name = HOSTILE if hostile and method == "sparse" else "train"
            tag = HOSTILE if hostile and method == "sparse" else method
            runs.append(fake_report(
                name, cpu_j=energy * 0.3, gpu_j=energy * 0.65, dram_j=energy * 0.05,
                minute=2 * i + (method == "sparse"), logs=logs, warmup=i == 5,
                tags={"method": tag, "seed": str(i)}, items=50000,
                command=("python", "train.py", "--method", tag, "--seed", str(i))))
    return runs


class _Doc(HTMLParser):
    """The elements of a page: start tags with their attributes, whether every element is
    closed in order, and the text of each table cell by section."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.cells: dict[str, list[str]] = {}
        self.text: list[str] = []
        self._section = ""
        self._cell: list[str] | None = None
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "section":
            self._section = dict(attrs).get("id") or ""
        if tag in ("td", "th"):
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))  # <path .../> in SVG: closed at once

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.cells.setdefault(self._section, []).append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(html: str) -> _Doc:
    doc = _Doc()
    doc.feed(html)
    doc.close()
    assert not doc.errors, doc.errors[:5]
    assert doc.stack == [], doc.stack
    return doc


def _assert_self_contained(html: str) -> None:
    """No reference out of the page: no URL, script, link, import, source or external
    url(); every internal reference points at an id of the page, and ids are unique."""
    assert "http://" not in html and "https://" not in html
    lowered = html.lower()
    for bad in ("<script", "<link", "@import", "<iframe", "<object", "<embed", "<img",
                " src=", "javascript:"):
        assert bad not in lowered, bad
    assert set(re.findall(r"url\((.)", html)) <= {"#"}
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "duplicate ids"
    refs = set(re.findall(r'href="#([^"]+)"', html)) | set(re.findall(r"url\(#([^)]+)\)",
                                                                        html))
    assert refs <= set(ids), sorted(refs - set(ids))[:5]
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert all(h.startswith("#") for h in hrefs)


# -- the page ----------------------------------------------------------------------------------
def test_page_has_the_comparison_tables_cells_in_order() -> None:
    runs = _study()
    html = study_page(runs, by="tag:method", target="val_acc=0.9", generated_at=NOW)
    doc = _parse(html)
    rows = compare(runs, by="tag:method", target="val_acc=0.9")
    headers, table = comparison_table(rows, lines=2, diff_label=DIFF_LABEL)
    assert doc.cells["comparison"] == [*headers, *[c for row in table for c in row]]
    # what compare computes is there: the mean ± CI of the energy and its difference
    energy = next(r for r in table if r[0] == "energy total (J)")
    assert re.fullmatch(r"[\d.]+ ± [\d.]+", energy[1])
    diff = table[table.index(energy) + 1]
    assert diff[0] == DIFF_LABEL and diff[2].startswith("−") and "p < 0.001" in diff[2]
    assert any(r[0] == "energy to val_acc ≥ 0.9 (J)" for r in table)
    text = " ".join(doc.text)
    assert "Energy study: method=dense vs method=sparse" in text
    assert "2 groups of runs, by the value of tag method; 10 runs compared, 1 warm-up" in text
    assert "method=dense (n = 5, +1 warm-up)" in text and "method=sparse (n = 5)" in text
    assert "Made 2026-03-02 09:30 UTC" in text
    assert "machine: the whole machine's energy" in text
    # the footer: what ± and the difference are, its continued line joined
    assert ("95 % CI by the delta method on the log ratio; p: Welch's t-test, two-sided; "
            "not significant: p ≥ 0.05") in text


def test_page_sections_in_order_with_runs_warnings_and_methods() -> None:
    runs = _study()
    html = study_page(runs, by="tag:method", generated_at=NOW)
    doc = _parse(html)
    sections = [a.get("id") for t, a in doc.tags if t == "section"]
    assert sections == ["comparison", "figures", "runs", "warnings", "methods"]
    # the runs table: every run (warm-up too), each with its group
    section = html[html.index('<section id="runs">'):html.index('<section id="warnings">')]
    assert section.count("<tr>") == 1 + 11
    cells = doc.cells["runs"]
    assert cells[0] == "run"
    assert sum("method=sparse" in c for c in cells) == 5
    assert sum("method=dense" in c for c in cells) == 6
    assert sum("warm-up" in c for c in cells) == 1
    # the methods paragraph, its reference once, under it
    methods = html[html.index('<section id="methods">'):]
    assert methods.count("[1]") == 2  # the mark in the text, and the reference
    assert re.search(r"<p>We measured the energy of .*\[1\].*</p>\n?<p class=\"reference\">"
                     r"\[1\] ", methods)
    # warnings: compare's, or that there are none
    warnings = comparison_warnings(compare(runs, by="tag:method"))
    section = html[html.index('<section id="warnings">'):html.index('<section id="methods">')]
    if warnings:
        assert section.count("<li>") == len(warnings)
    else:
        assert "None: the comparison raised no warning." in section


def test_page_warns_with_few_runs_and_says_so() -> None:
    runs = [fake_report("a", cpu_j=100.0, minute=0), fake_report("b", cpu_j=60.0, minute=1)]
    html = study_page(runs, generated_at=NOW)
    warnings = comparison_warnings(compare(runs))
    assert warnings
    section = html[html.index('<section id="warnings">'):html.index('<section id="methods">')]
    assert section.count("<strong>Warning:</strong>") == len(warnings)


def test_page_is_self_contained() -> None:
    pytest.importorskip("matplotlib")
    html = study_page(_study(), by="tag:method", target="val_acc=0.9", generated_at=NOW)
    _assert_self_contained(html)
    doc = _parse(html)
    assert [t for t, _ in doc.tags].count("svg") == 3  # compare, breakdown, energy to target
    assert [t for t, _ in doc.tags].count("figcaption") == 3
    assert html.count("<style") == 1  # the page's own; the figures' are dropped
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html and "<metadata" not in html
    assert "<!--" not in html
    assert "@media print" in html and "@media (max-width" in html


def test_hostile_run_names_tags_and_commands_are_escaped() -> None:
    runs = _study(hostile=True)
    html = study_page(runs, by="tag:method", title=f"Title {HOSTILE}", generated_at=NOW)
    doc = _parse(html)
    assert not any(t == "script" for t, _ in doc.tags)
    assert not any(k.startswith("on") for _, attrs in doc.tags for k in attrs)
    assert "<script" not in html.lower()
    text = "".join(doc.text)
    # shown as text: in the title, the groups, the table's header, the runs, the commands
    assert f"Title {HOSTILE}" in text
    assert f"method={HOSTILE} (n = 5)" in text
    assert f"method={HOSTILE} (n=5)" in doc.cells["comparison"]
    assert sum(HOSTILE in c for c in doc.cells["runs"]) == 5
    assert f"python train.py --method '{HOSTILE}' --seed 0 (method={HOSTILE}, and 4 other " \
        "commands)" in text
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 5


def test_without_matplotlib_the_page_says_so_and_has_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    html = study_page(_study(), by="tag:method", generated_at=NOW)
    _parse(html)
    assert "<svg" not in html
    assert ("No figures: figures need matplotlib, which is not installed: pip install "
            "'energymeter-ml[plot]'") in html.replace("&#x27;", "'")
    assert '<section id="runs">' in html and '<section id="methods">' in html


def test_a_figure_the_runs_cannot_give_is_a_note() -> None:
    pytest.importorskip("matplotlib")
    html = study_page(_study(), by="tag:method", target="loss<=0.1", generated_at=NOW)
    _parse(html)
    assert html.count("<svg") == 2
    figure = html[html.index('<figure id="figure-3">'):]
    assert re.search(r'<p class="not-drawn">Not drawn: .*loss', figure)
    assert "Energy to loss ≤ 0.1" in figure


def test_a_sweeps_runs_are_grouped_by_its_axes() -> None:
    runs = [fake_report("train", cpu_j=100.0 + i, minute=i,
                        tags={"study": "s1", "sweep_axes": "method", "variant": str(i % 2),
                              "method": ("dense", "sparse")[i % 2]}) for i in range(4)]
    html = study_page(runs, generated_at=NOW)
    assert "2 groups of runs, by the sweep&#x27;s axis method; 4 runs compared" in html


def test_bad_arguments_raise() -> None:
    from energymeter.errors import ConfigError, ReportError

    with pytest.raises(ReportError, match="no run given"):
        study_page([])
    with pytest.raises(ReportError, match="--by"):
        study_page(_study(), by="nosuch")
    with pytest.raises(ConfigError, match="basis"):
        study_page(_study(), basis="nosuch")
    with pytest.raises(ReportError, match="cannot make a page of int"):
        study_page([3])


def test_inline_svg_keeps_figures_apart() -> None:
    svg = ('<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n '
           '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
           '<svg xmlns:xlink="http://www.w3.org/1999/xlink" width="10pt" '
           'xmlns="http://www.w3.org/2000/svg"><metadata><x>https://matplotlib.org/</x>'
           '</metadata><defs><style type="text/css">*{stroke: red}</style>'
           '<clipPath id="p1"><rect/></clipPath><path id="g-48" d="M 0 0"/></defs>'
           '<!-- a <b> comment --><use xlink:href="#g-48"/><path clip-path="url(#p1)" '
           'style="fill: url(#p1)"/></svg>\n')
    out = inline_svg(svg, "fig2-", 'a "label" <b>')
    assert out == ('<svg role="img" aria-label="a &quot;label&quot; &lt;b&gt;" width="10pt">'
                   '<defs><clipPath id="fig2-p1"><rect/></clipPath>'
                   '<path id="fig2-g-48" d="M 0 0"/></defs><use xlink:href="#fig2-g-48"/>'
                   '<path clip-path="url(#fig2-p1)" style="fill: url(#fig2-p1)"/></svg>')


# -- the command -------------------------------------------------------------------------------
def _on_disk(tmp_path: Path, runs: list[Report]) -> Path:
    out = tmp_path / "runs"
    for i, r in enumerate(runs):
        _save(r, out, f"20260101T12{i:02d}00Z-{r.run_id[:8]}")
    return out


def test_cli_writes_the_page(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = _on_disk(tmp_path, _study())
    page = tmp_path / "study.html"
    code, stdout, err = invoke("page", str(out), "--by", "tag:method", "--target",
                               "val_acc=0.9", "--title", "Pruning", "-o", str(page))
    assert code == 0, err
    assert stdout == ""
    assert err.strip().splitlines()[-1] == f"energymeter: wrote {page}"
    html = page.read_text(encoding="utf-8")
    _assert_self_contained(html)
    assert "<title>Pruning</title>" in html and html.count("<svg") == 3
    # the same page as from Python, but for the time it was made
    again = study_page(find_runs([str(out)]), by="tag:method", target="val_acc=0.9",
                       title="Pruning", generated_at=NOW)
    made = re.compile(r"Made \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    assert made.sub("", html) == made.sub("", again)


@pytest.mark.parametrize(("args", "message"), [
    (("-o", "{tmp}/study.pdf"), "accepted file extensions: .html, .htm"),
    (("-o", "{tmp}/missing/study.html"), "does not exist"),
    (("--by", "nosuch", "-o", "{tmp}/s.html"), "--by 'nosuch' is not understood"),
    (("--target", "val_acc", "-o", "{tmp}/s.html"), "METRIC=VALUE"),
])
def test_cli_bad_options_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    out = _on_disk(tmp_path, _study()[:2])
    code, _, err = invoke("page", str(out), *(a.format(tmp=tmp_path) for a in args))
    assert code == 2
    assert message in err
    assert not list(tmp_path.glob("**/*.htm*"))


def test_cli_help_lists_page() -> None:
    code, out, _ = invoke("--help")
    assert code == 0 and "page" in out
    code, out, _ = invoke("page", "--help")
    assert code == 0 and "self-contained" in out


# -- in a browser ------------------------------------------------------------------------------
def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


needs_chromium = pytest.mark.skipif(
    _chromium() is None,
    reason="Chromium is not installed (Debian: apt-get install chromium, as .ci/run does): "
           "the study page is not opened in a browser")


class DevTools:
    """A client of Chromium's DevTools protocol over one websocket (RFC 6455, client side:
    masked text frames out; unmasked, possibly fragmented frames in), stdlib only. Commands
    go to the browser or, with ``session``, to a page attached in flat mode; every event
    received is kept in :attr:`events`."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            data += chunk
        return data

    def _send(self, message: dict[str, Any]) -> None:
        payload = json.dumps(message).encode()
        n = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 1 << 16
                                else bytes([0x80 | 127]) + struct.pack(">Q", n))
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _receive(self) -> dict[str, Any]:
        data = b""
        while True:
            first, second = self._read(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            opcode = first & 0x0F
            if opcode == 8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode in (0, 1, 2):
                data += payload
                if first & 0x80:
                    return json.loads(data)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._send(message)
        while True:
            reply = self._receive()
            if reply.get("id") == self.next_id:
                assert "error" not in reply, (method, reply["error"])
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event ``method`` (already received or next); the socket's timeout
        bounds the wait."""
        while True:
            found = next((e for e in self.events if e.get("method") == method), None)
            if found:
                return found
            self.events.append(self._receive())


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    """Headless Chromium on a fresh profile, any network request sent nowhere (every host
    resolves to nothing, through a proxy on a closed port), and its DevTools client."""
    binary = _chromium()
    assert binary is not None
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or len(port_file.read_text().split()) < 2:
            if proc.poll() is not None:
                pytest.fail(f"chromium exited with {proc.returncode}: "
                            f"{proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail("chromium did not open its DevTools port within 30 s")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        client = DevTools(f"ws://127.0.0.1:{port}{path}", timeout_s=30)
        yield client
        client.sock.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]


@needs_chromium
def test_the_page_renders_in_chromium(tmp_path: Path, browser: DevTools) -> None:
    pytest.importorskip("matplotlib")
    page = tmp_path / "study.html"
    page.write_text(study_page(_study(), by="tag:method", target="val_acc=0.9",
                               generated_at=NOW), encoding="utf-8")
    url = page.as_uri()
    target = browser.call("Target.createTarget", url="about:blank")["targetId"]
    session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.call(f"{domain}.enable", session)
    browser.call("Emulation.setDeviceMetricsOverride", session, width=1000, height=1400,
                 deviceScaleFactor=1, mobile=False)
    browser.events.clear()
    browser.call("Page.navigate", session, url=url)
    browser.wait_for("Page.loadEventFired")

    def evaluate(expression: str) -> Any:
        return browser.call("Runtime.evaluate", session, expression=expression,
                            returnByValue=True)["result"]["value"]

    assert evaluate("document.title") == "Energy study: method=dense vs method=sparse"
    assert evaluate("document.querySelectorAll('figure svg').length") == 3
    # every figure drawn at a size, its paths there
    sizes = evaluate("[...document.querySelectorAll('figure svg')].map(s => "
                     "[s.getBoundingClientRect().width, s.getBoundingClientRect().height, "
                     "s.querySelectorAll('path, use').length])")
    assert all(w > 300 and h > 150 and n > 20 for w, h, n in sizes), sizes
    assert evaluate("document.querySelectorAll('#comparison td').length") > 20
    shot = base64.b64decode(browser.call("Page.captureScreenshot", session,
                                         format="png")["data"])
    assert shot.startswith(b"\x89PNG") and len(shot) > 20_000
    (tmp_path / "study-page.png").write_bytes(shot)
    # a phone: the page no wider than the screen (tables scroll inside their box)
    browser.call("Emulation.setDeviceMetricsOverride", session, width=380, height=800,
                 deviceScaleFactor=1, mobile=True)
    assert evaluate("document.documentElement.scrollWidth") <= 380
    assert evaluate("document.querySelector('figure svg').getBoundingClientRect().width") \
        <= 380
    # print: the page prints to PDF, with its print styles
    browser.call("Emulation.setEmulatedMedia", session, media="print")
    assert evaluate("matchMedia('print').matches") is True
    pdf = base64.b64decode(browser.call("Page.printToPDF", session)["data"])
    assert pdf.startswith(b"%PDF")

    requests = [e["params"]["request"]["url"] for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"]
    assert requests == [url]
    failed = [e["params"] for e in browser.events if e.get("method") == "Network.loadingFailed"]
    assert failed == []
    errors = [e["params"] for e in browser.events
              if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled"
                  and e["params"]["type"] in ("error", "warning", "assert"))
              or (e.get("method") == "Log.entryAdded"
                  and e["params"]["entry"]["level"] in ("error", "warning"))]
    assert errors == []


def test_importing_the_page_and_its_command_loads_no_matplotlib() -> None:
    code = ("import sys, energymeter.analysis.page, energymeter.cli.page\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"
