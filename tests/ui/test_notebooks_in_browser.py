"""Every notebook's student version, run in a real JupyterLab by a real browser (Chromium).

nbval proves that kernels run the instructor notebooks; this proves what a student sees: the
student version (exercises unsolved, as `llama-edu student` writes it) opens, "Run All Cells"
finishes without an error, widgets render (a slider is there and no "Error displaying
widget"), and figures appear. A screenshot of each notebook is saved to artifacts/ui/ (ignored
by git). Each unsolved exercise must say "not implemented yet" and the notebook must go on with
the library's version (tests/student_run.py; where no browser is installed,
tests/test_classroom.py runs the same judgement in a plain kernel). The server works on a
temporary copy of notebooks/, so nothing the browser saves can touch the committed notebooks.

Two things make this reliable:

- "Run All Cells" is clicked only once the notebook's kernel is connected and idle. Clicked
  earlier, JupyterLab finds no kernel, clears the cells and asks "Select Kernel" instead of
  running anything; the notebook then still shows its committed outputs, which are *untrusted*,
  so JupyterLab renders only their safe text/plain fallback (``interactive(children=...``)
  instead of the widgets.
- Outputs and execution numbers are cleared first, so a number in a prompt can only come from
  this run. "Run All Cells" marks every cell [*] at once; the run is over when no prompt shows
  [*], at least one shows a number and the kernel is idle. It passed if every cell with code
  shows a number: a cell that raises stops the run (the cells after it go back to [ ]), which
  ends the wait early and is reported with its error.

The server is isolated from the user's Jupyter config and JupyterLab settings and workspaces,
and Chromium cannot resolve any host, so the run needs no network.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from student_run import CHROMIUM, browser_missing, student_run_problems

from llama_edu import classroom

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "ui"
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ZH_SAMPLE = ["00_welcome.ipynb", "04_attention.ipynb"]
"""Chapters of the Chinese edition (notebooks_zh/) that run in the browser too: their code and
outputs equal the English ones (tests/test_translations.py), so a sample shows the edition runs."""
PATHS = [f"notebooks/{n}" for n in NOTEBOOKS] + [
    f"notebooks_zh/{n}" for n in ZH_SAMPLE if (ROOT / "notebooks_zh" / n).is_file()]
CHROMIUM_FLAGS = [
    "--no-sandbox",  # we run as root in containers; the sandbox refuses that
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    # Nothing but the loopback server can be reached, so no page can wait on the internet.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# Generous: 09_training trains for about 3 minutes on an idle 2-core machine, but took 13.5
# minutes while other training jobs shared the machine.
RUN_TIMEOUT_S = 1200
KERNEL_TIMEOUT_S = 180

pytestmark = [pytest.mark.ui, pytest.mark.slow]

# JupyterLab user settings for the test server.
LAB_SETTINGS = {
    # Render every cell (no windowing), so that off-screen widgets and figures are in the page.
    "notebook-extension/tracker": {"windowingMode": "none"},
    # No "get notified about official Jupyter news?" toast over the screenshots, no update check.
    "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}

# One poll of the page: the prompts of the code cells, the kernel's status, open dialogs.
STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const prompts = [...panel.querySelectorAll('.jp-Notebook-cell.jp-CodeCell')].map(cell => {
    const prompt = cell.querySelector('.jp-InputArea-prompt');
    return prompt ? prompt.textContent.trim() : '';
  });
  const kernel = [...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .map(item => item.textContent.trim()).find(text => text.includes(' | ')) || '';
  const dialogs = [...document.querySelectorAll('.jp-Dialog')].map(d => d.innerText.trim());
  return {prompts, kernel, dialogs};
}"""

# Figures whose image the browser has received and decoded.
LOADED_IMAGES_JS = """() => [...document.querySelectorAll(
  '.jp-NotebookPanel .jp-RenderedImage img')]
  .filter(img => img.complete && img.naturalWidth > 0).length"""

# How each output of the cells (not those inside widgets) was rendered: its MIME type, or
# "widget" for a widget view. An untrusted or unrendered widget output shows as "text/plain".
RENDERED_JS = """() => [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]
  .filter(o => !o.parentElement.closest('.jupyter-widgets'))
  .map(o => o.getAttribute('data-mime-type')
       || (o.querySelector('.jupyter-widgets') ? 'widget' : '?'))"""

# For each `interactive` widget: how many outputs its output area shows below the controls.
INTERACTIVE_OUTPUTS_JS = """() => [...document.querySelectorAll(
  '.jp-NotebookPanel .widget-interact')]
  .map(w => w.querySelectorAll('.widget-output .jp-OutputArea-output').length)"""

NUMBERED = re.compile(r"^\[\d+\]:$")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on loopback, no token, serving a copy of notebooks/; yields (url, root)."""
    missing = browser_missing()
    if missing:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI must run the browser tests, but {missing}.")
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(
        ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints")
    )
    classroom.write_student_versions(ROOT / "notebooks", root / "notebooks")
    if (ROOT / "notebooks_zh").is_dir():
        shutil.copytree(ROOT / "notebooks_zh", root / "notebooks_zh",
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        classroom.write_student_versions(ROOT / "notebooks_zh", root / "notebooks_zh")
    settings = root / ".lab-settings"
    for plugin, values in LAB_SETTINGS.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    (root / ".jupyter-config").mkdir()
    env = dict(
        os.environ,
        # A user's own Jupyter config (a password, a token, a root_dir) must not reach the test.
        JUPYTER_CONFIG_DIR=str(root / ".jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(root / ".runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"),
    )
    env.pop("MPLBACKEND", None)  # see conftest.py: Agg would stop the figures
    env.pop("LLAMA_EDU_DEVICE", None)
    port = _free_port()
    log = (root / "lab.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
            f"--port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
            "--ServerApp.password=", f"--ServerApp.root_dir={root}", "--allow-root",
            "--ServerApp.disable_check_xsrf=True",
            "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("JupyterLab did not start:\n" + (root / "lab.log").read_text()[-3000:])
            time.sleep(1)
        yield url, root
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(lab, tmp_path_factory):
    """A headless Chromium with a fresh user-data folder and offline-friendly flags."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        # JupyterLab loads a lot of JavaScript; a busy 2-core machine needs more than 30 s.
        context.set_default_timeout(60_000)
        context.set_default_navigation_timeout(120_000)
        try:
            yield context
        finally:
            context.close()


def _menu(page, menu: str, item: str) -> None:
    """Click menu > item; labels match exactly ("Run All Cells", not "Restart ... All Cells")."""
    page.locator(".lm-MenuBar-itemLabel").get_by_text(menu, exact=True).click()
    page.locator(".lm-Menu-itemLabel").get_by_text(item, exact=True).click()


def _state(page) -> dict:
    state = page.evaluate(STATE_JS)
    assert state is not None, "no notebook panel in the page"
    return state


def _wait_for_kernel(page, timeout_s: float) -> None:
    """Wait until the notebook's kernel is connected and idle (status bar "<kernel> | Idle").

    The execution indicator in the toolbar is no help here: it says "idle" while the notebook
    still has no kernel at all.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        state = _state(page)
        if state["dialogs"]:
            raise AssertionError(f"a dialog opened before the run: {state['dialogs']}")
        name, _, status = state["kernel"].partition(" | ")
        if name and name != "No Kernel" and status == "Idle":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no idle kernel after {timeout_s:.0f} s: {state['kernel']!r}")
        page.wait_for_timeout(500)


def _wait_until_done(page, expected_code: list[bool], timeout_s: float) -> list[str]:
    """Wait until the run is over; return the code cells' prompts.

    The outputs and execution numbers were cleared before "Run All Cells", so the run is over
    when no prompt is [*], at least one shows a number (the run has started: JupyterLab marks
    every queued cell [*] at once when it starts) and the kernel is idle again. It is complete
    when every cell with code shows a number; a cell that raised leaves the ones after it at [ ].
    """
    deadline = time.monotonic() + timeout_s
    while True:
        state = _state(page)
        prompts = state["prompts"]
        assert len(prompts) == len(expected_code), (
            f"{len(prompts)} code cells in the page, {len(expected_code)} in the notebook"
        )
        if not any(expected_code):
            return prompts
        if state["dialogs"]:
            raise AssertionError(f"a dialog opened during the run: {state['dialogs']}")
        status = state["kernel"].partition(" | ")[2]
        if status in ("Dead", "Unknown"):
            raise AssertionError(f"the kernel died during the run: {state['kernel']!r}")
        started = any(NUMBERED.match(p) for p in prompts)
        if started and "[*]:" not in prompts and status == "Idle":
            return prompts
        if time.monotonic() > deadline:
            busy = sum(p == "[*]:" for p in prompts)
            raise AssertionError(
                f"the notebook was still running after {timeout_s:.0f} s "
                f"({busy} of {len(prompts)} code cells at [*], kernel {state['kernel']!r})"
            )
        page.wait_for_timeout(1000)


def _counts(nb: nbformat.NotebookNode) -> tuple[int, int, list[str]]:
    """(image outputs, widget outputs, error messages) of a notebook."""
    images = widgets = 0
    errors = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            images += "image/png" in data
            widgets += WIDGET_MIME in data
            if out.output_type == "error":
                errors.append(f"{out.ename}: {out.evalue}")
    return images, widgets, errors


def _save(page, path: Path, timeout_s: float = 60) -> None:
    """Save the notebook from the browser and wait until the file on disk has changed."""
    before = path.stat().st_mtime_ns
    _menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + timeout_s
    while path.stat().st_mtime_ns == before:
        dialogs = _state(page)["dialogs"]
        if dialogs:
            raise AssertionError(f"a dialog opened on saving {path.name}: {dialogs}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the browser did not save {path.name} within {timeout_s:.0f} s")
        page.wait_for_timeout(250)


def _shut_down_kernels(url: str) -> None:
    """Stop the notebook's kernel, so that kernels do not pile up over the test run."""
    with urllib.request.urlopen(f"{url}/api/sessions", timeout=10) as response:
        sessions = json.loads(response.read())
    for session in sessions:
        request = urllib.request.Request(f"{url}/api/sessions/{session['id']}", method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


def _screenshot(page, locator, path: Path, block: str = "start") -> None:
    """Scroll `locator` into the notebook's view and take a screenshot of the page."""
    locator.evaluate("(e, block) => e.scrollIntoView({block})", block)
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))


@pytest.mark.parametrize("path", PATHS)
def test_notebook_runs_in_jupyterlab(lab, browser, path):
    url, root = lab
    folder, name = path.split("/")
    stem = Path(name).stem + ("" if folder == "notebooks" else f"-{folder}")
    committed = nbformat.read(ROOT / path, as_version=4)
    want_images, want_widgets, _ = _counts(committed)
    expected_code = [bool(c.source.strip()) for c in committed.cells if c.cell_type == "code"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob(f"{stem}*.png"):
        old.unlink()

    page = browser.new_page()
    console: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and console.append(m.text[:300]))
    page.on("pageerror", lambda e: console.append(f"uncaught: {str(e)[:300]}"))
    try:
        # ?reset: start from an empty workspace, so earlier notebooks are not reopened.
        page.goto(f"{url}/lab/tree/{path}?reset")
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=120_000)
        page.keyboard.press("Control+b")  # hide the file browser: more notebook per screenshot
        _wait_for_kernel(page, KERNEL_TIMEOUT_S)
        _menu(page, "Edit", "Clear Outputs of All Cells")
        cleared = _state(page)["prompts"]
        assert page.locator(".jp-OutputArea-output").count() == 0, "outputs were not cleared"
        assert not any(NUMBERED.match(p) for p in cleared), f"prompts were not cleared: {cleared}"

        started = time.monotonic()
        _menu(page, "Run", "Run All Cells")
        prompts = _wait_until_done(page, expected_code, RUN_TIMEOUT_S)
        seconds = time.monotonic() - started
        # Let the last outputs (figures, widget views) reach the page.
        page.wait_for_timeout(1000)

        panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        _screenshot(page, panel.locator(".jp-Cell").first, ARTIFACTS / f"{stem}.png")
        figure = panel.locator(".jp-RenderedImage img").first
        if figure.count():
            _screenshot(page, figure, ARTIFACTS / f"{stem}-figure.png", block="center")
        # The controls a learner moves: sliders, or the text box of chapter 13's glossary search.
        controls = ".widget-slider, .widget-text"
        sliders = panel.locator(controls)
        if want_widgets and sliders.count():
            cell = panel.locator(".jp-Notebook-cell", has=page.locator(controls)).first
            _screenshot(page, cell, ARTIFACTS / f"{stem}-widget.png")
        loaded_images = page.evaluate(LOADED_IMAGES_JS)
        interactive_outputs = page.evaluate(INTERACTIVE_OUTPUTS_JS)
        rendered = page.evaluate(RENDERED_JS)
        visible_sliders = sum(s.is_visible() for s in sliders.all())
        body = page.locator("#main").inner_text()
        _save(page, root / path)
    except BaseException:
        with contextlib.suppress(Exception):  # the page itself may be what failed
            page.screenshot(path=str(ARTIFACTS / f"{stem}-failure.png"))
        if console:
            print(f"{name}: browser console errors and warnings:", *console, sep="\n  ")
        raise
    finally:
        page.close()
        with contextlib.suppress(OSError):  # the server's state is reported elsewhere
            _shut_down_kernels(url)
    print(f"{name}: ran in {seconds:.0f} s in the browser")

    saved = nbformat.read(root / path, as_version=4)
    images, widgets, errors = _counts(saved)
    assert errors == [], f"{name}: error outputs in the browser run: {errors}"
    assert student_run_problems(saved, name) == []
    not_run = [
        i
        for i, (prompt, code) in enumerate(zip(prompts, expected_code, strict=True))
        if code and not NUMBERED.match(prompt)
    ]
    assert not not_run, f"{name}: code cells {not_run} (counting code cells from 0) did not run"
    assert images == want_images, f"{name}: {images} figures; committed: {want_images}"
    assert loaded_images >= want_images, (
        f"{name}: {loaded_images} figures shown in the browser; committed: {want_images}"
    )
    assert "Error displaying widget" not in body, f"{name}: a widget failed to display"
    assert "Loading widget" not in body, f"{name}: a widget never finished loading"
    assert widgets == want_widgets, f"{name}: {widgets} widget outputs; committed: {want_widgets}"
    if want_widgets:
        shown = rendered.count("widget")
        assert shown == want_widgets, (
            f"{name}: {shown} of {want_widgets} widget outputs rendered as widgets; "
            f"outputs rendered as {sorted(set(rendered))}; console: {console[-5:]}"
        )
        assert visible_sliders > 0, f"{name}: no visible slider (or text control) on the page"
    empty = [i for i, n in enumerate(interactive_outputs) if n == 0]
    assert not empty, (
        f"{name}: interactive widget(s) {empty} (counting from 0) show their controls but no "
        "output; widgets.interactive(f, ...) does not display what f returns (interact does, "
        "or f can display its figure itself)"
    )
