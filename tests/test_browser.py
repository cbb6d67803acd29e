"""The notebook widgets in a real browser: JupyterLab + headless Chromium, driven by Selenium.

A JupyterLab server (127.0.0.1, a free port, a random token) serves a temporary copy of notebooks 01 and 04;
Chromium opens each one, runs all cells (quick mode: JEPA_QUICK=1 reaches the kernel through the server's
environment), checks that no cell raised, then moves the explorer sliders with the keyboard and the
readout text box, as a reader would, and checks that the figure and the printed statistics change.
Screenshots of each widget before and after every change go to tests/_artifacts/browser/ (git-ignored).

Needs Debian's `chromium` and `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver) and the
`selenium` package: skipped without them, except under CI (CI=true), where .ci/run installs them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "_artifacts" / "browser"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
NOTEBOOKS = ["01_multiblock_masking.ipynb", "04_predictor_and_ema.ipynb"]
RUN_ALL_TIMEOUT = 150  # s; quick mode takes ~30-60 s for notebook 04 on 2 cores
UPDATE_TIMEOUT = 45  # s for one widget redraw (a keypress -> kernel -> new figure in the page)


def _require_browser():
    """Skip (fail under CI) unless chromium, chromedriver and selenium are all there."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: .ci/run should have installed them")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, children: list) -> None:
    """Terminate a process group, then anything it started in other sessions (kernels), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    for child in children:
        try:
            child.terminate()
            child.wait(timeout=5)
        except Exception:  # already gone, or does not die politely
            try:
                child.kill()
            except Exception:
                pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a temporary copy of the notebooks; yields (base_url, token)."""
    _require_browser()
    import psutil

    root = tmp_path_factory.mktemp("lab")
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, root / name)
    # isolated user settings and workspaces: no news pop-up, nothing written to ~/.jupyter
    # and every cell kept in the page (JupyterLab 4 otherwise detaches cells scrolled out of view)
    settings = root / ".lab" / "settings" / "@jupyterlab"
    for plugin, values in {
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
        "notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JEPA_QUICK="1", OMP_NUM_THREADS="1", JUPYTER_RUNTIME_DIR=str(root / ".runtime"))
    # the kernel imports this working tree's jepa_lite, whatever an (editable) install points at
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={settings.parent}",
        f"--LabApp.workspaces_dir={root / '.lab' / 'workspaces'}", "--LabApp.extension_manager=readonly",
    ] + (["--allow-root"] if os.geteuid() == 0 else [])  # fmt: skip
    log = open(root / "jupyter.log", "wb")
    proc = subprocess.Popen(
        cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with {proc.returncode}:\n{(root / 'jupyter.log').read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"jupyter lab did not answer in 90 s:\n{(root / 'jupyter.log').read_text()}"
                )
            time.sleep(0.5)
        yield base, token, root
    finally:
        children = []
        try:
            children = psutil.Process(proc.pid).children(recursive=True)  # kernels live in their own sessions
        except psutil.Error:
            pass
        _stop(proc, children)
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    """Headless Chromium through Debian's chromedriver (no browser download at run time)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to fetch a driver or a browser
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1600", "--force-device-scale-factor=1"):  # fmt: skip
        opts.add_argument(arg)
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
        driver.set_script_timeout(30)
        yield driver
    finally:
        if driver is not None:
            driver.quit()  # chromedriver ends the browser and its helper processes
        if offline is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = offline


@pytest.fixture(scope="module")
def shots():
    """The screenshot folder, emptied at the start of the run."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


# ----------------------------------------------------------------------------------------------------------
# helpers: everything below talks to the page, never to the kernel

NOTEBOOK_STATE_JS = """
const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!nb || !nb.content || !nb.sessionContext) return null;
const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
const cells = nb.content.widgets.filter(c => c.model.type === 'code');
const errors = [];
cells.forEach((c, i) => {
  for (let k = 0; k < c.model.outputs.length; k++) {
    const o = c.model.outputs.get(k).toJSON();
    if (o.output_type === 'error') errors.push(`code cell ${i}: ${o.ename}: ${o.evalue}`);
  }
});
return {ready: nb.context.isReady && nb.sessionContext.isReady, status: kernel ? kernel.status : 'none',
        counts: cells.map(c => c.model.executionCount), errors: errors};
"""


def _wait(driver, predicate, timeout: float, what: str, poll: float = 0.5):
    """Poll `predicate(driver)` until truthy; fail with `what` and a screenshot otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate(driver)
        except Exception as err:  # stale elements while the page re-renders
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(poll)
    slug = re.sub(r"\W+", "_", what)[:60]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"timeout_{slug}.png"))
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def shutdown_kernels(lab) -> None:
    """Shut down the kernels of notebooks opened before (REST API), so only one holds memory at a time."""
    base, token, _ = lab
    headers = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/sessions", headers=headers)) as r:
        sessions = json.load(r)
    for session in sessions:
        req = urllib.request.Request(f"{base}/api/sessions/{session['id']}", headers=headers, method="DELETE")
        urllib.request.urlopen(req).close()


def record(name: str, **values) -> None:
    """Add `values` under `name` to summary.json beside the screenshots (timings and texts, for the log)."""
    path = ARTIFACTS / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary.setdefault(name, {}).update(values)
    path.write_text(json.dumps(summary, indent=1))


def open_and_run_all(driver, lab, name: str) -> dict:
    """Open `name` in JupyterLab, clear it, run all cells (the Run menu's command), wait; return the state."""
    base, token, _ = lab
    shutdown_kernels(lab)
    driver.get(f"{base}/lab/tree/{name}?token={token}&reset")
    _wait(driver, lambda d: (s := d.execute_script(NOTEBOOK_STATE_JS)) and s["ready"] and s["status"] == "idle",
          90, f"{name} to open with an idle kernel")  # fmt: skip
    # clear the saved outputs first (they hold execution counts and a widget rendered from saved state),
    # so that "every cell has a count" can only mean "every cell ran in this kernel"
    driver.execute_script("window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs');")
    _wait(driver, lambda d: all(c is None for c in d.execute_script(NOTEBOOK_STATE_JS)["counts"]), 30,
          f"the saved outputs of {name} to clear")  # fmt: skip
    t0 = time.monotonic()
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")

    def finished(d):
        s = d.execute_script(NOTEBOOK_STATE_JS)
        if s["errors"]:
            return s  # stop early: a cell raised
        return s if s["status"] == "idle" and all(c is not None for c in s["counts"]) else None

    state = _wait(driver, finished, RUN_ALL_TIMEOUT, f"all cells of {name} to run")
    if not state["errors"]:  # a fresh kernel numbers the cells 1..n: each ran once, in order
        assert state["counts"] == list(range(1, len(state["counts"]) + 1)), state["counts"]
    state["seconds"] = round(time.monotonic() - t0, 1)
    record(name, run_all_seconds=state["seconds"], cell_errors=state["errors"])
    text = driver.execute_script("return document.querySelector('.jp-Notebook').innerText;")
    assert "quick mode: True" in text, "the kernel did not get JEPA_QUICK=1 (setup cell output)"
    return state


def page_errors(driver) -> list[str]:
    """Tracebacks or error text rendered in any output area of the page (stderr outputs included)."""
    texts = driver.execute_script(
        "return [...document.querySelectorAll("
        "'.jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]')].map(e => e.innerText);"
    )
    return [t for t in texts if "Traceback" in t or re.search(r"\w+Error\b", t)]


def find_widget(driver, slider_label: str):
    """The rendered `interactive` widget (.widget-interact) that has a slider labelled `slider_label`."""
    from selenium.webdriver.common.by import By

    def found(d):
        for w in d.find_elements(By.CSS_SELECTOR, ".widget-interact"):
            labels = [e.text for e in w.find_elements(By.CSS_SELECTOR, ".widget-label")]
            if slider_label in labels and w.find_elements(By.CSS_SELECTOR, ".widget-output img"):
                return w
        return None

    return _wait(driver, found, 60, f"the widget with slider '{slider_label}' to render with a figure")


def slider(widget, label: str):
    from selenium.webdriver.common.by import By

    for row in widget.find_elements(By.CSS_SELECTOR, ".widget-slider"):
        if row.find_element(By.CSS_SELECTOR, ".widget-label").text == label:
            return row
    raise AssertionError(f"no slider labelled {label!r} in the widget")


def output_of(widget) -> tuple[str, str]:
    """(printed text, <img> src) of the widget's output area."""
    from selenium.webdriver.common.by import By

    out = widget.find_element(By.CSS_SELECTOR, ".widget-output")
    imgs = out.find_elements(By.CSS_SELECTOR, "img")
    return " ".join(out.text.split()), imgs[0].get_attribute("src") if imgs else ""  # lines are wrapped


def shoot(driver, widget, path: Path) -> None:
    """Screenshot of the widget (scrolled into view), and of the whole window beside it for context."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", widget)
    decoded = "return [...arguments[0].querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)"
    _wait(driver, lambda d: d.execute_script(decoded, widget), UPDATE_TIMEOUT, "the figures to decode")
    time.sleep(0.5)  # let the scroll and the figure's layout settle before the capture
    widget.screenshot(str(path))
    driver.save_screenshot(str(path.with_name(path.stem + "_window.png")))


def wait_redraw(driver, widget, before_src: str, check, what: str) -> tuple[str, str]:
    """Wait until the widget shows a new, decoded figure and its text passes `check(text)`; return (text, src)."""
    from selenium.webdriver.common.by import By

    def done(d):
        text, src = output_of(widget)
        if not (src and src != before_src and check(text)):
            return None
        img = widget.find_element(By.CSS_SELECTOR, ".widget-output img")
        return (
            (text, src)
            if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0;", img)
            else None
        )

    return _wait(driver, done, UPDATE_TIMEOUT, what)


def press(element, *keys) -> None:
    """Focus `element` (a slider handle) with a click and send it keys, as a keyboard user would."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(element.parent).move_to_element(element).click().perform()
    for key in keys:
        element.send_keys(key)
        time.sleep(0.05)


def drag(driver, row, dx: int) -> None:
    """Drag the (first) handle of a slider row by dx pixels with the mouse."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    handle = row.find_element(By.CSS_SELECTOR, ".noUi-handle")
    ActionChains(driver).click_and_hold(handle).move_by_offset(dx // 2, 0).move_by_offset(dx - dx // 2, 0)\
        .release().perform()  # fmt: skip


def type_into_readout(driver, row, value: str) -> None:
    """Replace the text of a slider's editable readout and press Enter (ipywidgets 8 readouts are editable)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    readout = row.find_element(By.CSS_SELECTOR, ".widget-readout")
    ActionChains(driver).move_to_element(readout).click().perform()
    readout.send_keys(Keys.CONTROL, "a")
    readout.send_keys(value, Keys.ENTER)


STATS = re.compile(r"(\d+) target blocks of (\d+)x(\d+) = (\d+) patches")


def run_clean_and_find(browser, lab, notebook, label):
    """Run every cell of `notebook`; fail on any cell error, page error or unrendered widget; return the widget."""
    from selenium.webdriver.common.by import By

    state = open_and_run_all(browser, lab, notebook)
    assert not state["errors"], state["errors"]
    assert not page_errors(browser), page_errors(browser)
    assert "Loading widget" not in browser.find_element(By.CSS_SELECTOR, ".jp-Notebook").text
    return find_widget(browser, label)


# ----------------------------------------------------------------------------------------------------------
# the tests


def test_mask_explorer_in_the_browser(browser, lab, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    widget = run_clean_and_find(browser, lab, NOTEBOOKS[0], "target scale")
    text0, src0 = output_of(widget)
    m = STATS.search(text0)
    assert m and int(m[1]) == 4, f"default statistics not shown: {text0!r}"
    kt0 = int(m[4])
    shoot(browser, widget, shots / "01_mask_explorer_0_default.png")
    record(NOTEBOOKS[0], default=text0)

    # number of targets: keyboard on the slider handle, 4 -> 2
    handle = slider(widget, "targets M").find_element(By.CSS_SELECTOR, ".noUi-handle")
    press(handle, Keys.ARROW_LEFT, Keys.ARROW_LEFT)
    text1, src1 = wait_redraw(
        browser, widget, src0, lambda t: (s := STATS.search(t)) and s[1] == "2", "targets M 4 -> 2 to redraw"
    )
    assert "2 target blocks" in text1 and text1 != text0
    assert slider(widget, "targets M").find_element(By.CSS_SELECTOR, ".widget-readout").text == "2"
    shoot(browser, widget, shots / "01_mask_explorer_1_targets_2.png")
    record(NOTEBOOKS[0], targets_2=text1)

    # target scale: type a new range into the slider's readout, 0.15-0.20 -> 0.35-0.40: bigger blocks
    type_into_readout(browser, slider(widget, "target scale"), "0.35 - 0.40")
    text2, src2 = wait_redraw(
        browser, widget, src1, lambda t: (s := STATS.search(t)) and int(s[4]) > kt0, "target scale to redraw"
    )
    s2 = STATS.search(text2)
    assert s2[1] == "2" and int(s2[4]) > kt0, text2
    shoot(browser, widget, shots / "01_mask_explorer_2_scale_035_040.png")
    record(NOTEBOOKS[0], scale_035_040=text2)

    # an impossible setting from the browser: a readable message naming the slider, no traceback, and back
    grid = slider(widget, "grid size")
    press(grid.find_element(By.CSS_SELECTOR, ".noUi-handle"), Keys.HOME)  # 2x2 grid: no room for a context
    text3, _ = _wait(browser, lambda _: (o := output_of(widget)) and "Invalid setting" in o[0] and o,
                     UPDATE_TIMEOUT, "the message for an impossible setting")  # fmt: skip
    assert "grid size" in text3 and "target scale" in text3 and "Traceback" not in text3, text3
    assert not widget.find_elements(By.CSS_SELECTOR, ".widget-output img")
    shoot(browser, widget, shots / "01_mask_explorer_3_grid_2_message.png")
    record(NOTEBOOKS[0], grid_2=text3)
    type_into_readout(browser, grid, "7")
    _, src4 = wait_redraw(
        browser, widget, "", lambda t: (s := STATS.search(t)) and s[1] == "2", "grid size 2 -> 7 to redraw"
    )

    # the strategy dropdown: random masks, with a note that the sliders shape multi-block masks only
    from selenium.webdriver.support.ui import Select

    Select(widget.find_element(By.CSS_SELECTOR, ".widget-dropdown select")).select_by_visible_text("random")
    text5, src5 = wait_redraw(
        browser, widget, src4, lambda t: "random masks" in t, "strategy random to redraw"
    )
    assert "1 target block of" in text5 and "multi-block masks only" in text5, text5
    shoot(browser, widget, shots / "01_mask_explorer_4_strategy_random.png")

    # Resample: the same setting, the next draw number, a new batch of masks
    number = widget.find_element(By.CSS_SELECTOR, ".widget-text input")
    before = int(number.get_attribute("value"))
    widget.find_element(By.XPATH, ".//button[normalize-space()='Resample']").click()
    text6, _ = wait_redraw(browser, widget, src5, lambda t: "random masks" in t, "Resample to redraw")
    assert int(number.get_attribute("value")) == before + 1, number.get_attribute("value")
    shoot(browser, widget, shots / "01_mask_explorer_5_resampled.png")
    record(NOTEBOOKS[0], strategy_random=text5, resampled=text6)
    assert not page_errors(browser)


def test_ema_explorer_in_the_browser(browser, lab, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    widget = run_clean_and_find(browser, lab, NOTEBOOKS[1], "momentum m")
    text0, src0 = output_of(widget)
    assert "momentum 0.9000" in text0 and "= 10 steps" in text0, text0
    shoot(browser, widget, shots / "04_ema_explorer_0_default.png")

    # momentum: four stops to the right on the log-spaced slider, 0.9 -> 0.99
    handle = slider(widget, "momentum m").find_element(By.CSS_SELECTOR, ".noUi-handle")
    press(handle, *[Keys.ARROW_RIGHT] * 4)
    text1, src1 = wait_redraw(
        browser, widget, src0, lambda t: "momentum 0.9900" in t, "momentum 0.9 -> 0.99 to redraw"
    )
    assert "window 1/(1-m) = 100 steps" in text1 and "after 100 steps" in text1, text1
    shoot(browser, widget, shots / "04_ema_explorer_1_momentum_099.png")

    # noise: drag the handle with the mouse to the right, 0.50 -> more
    drag(browser, slider(widget, "noise std"), 60)
    text2, src2 = wait_redraw(
        browser, widget, src1, lambda t: (n := re.search(r"noise std ([\d.]+)", t)) and float(n[1]) > 0.5,
        "noise std dragged up to redraw",
    )  # fmt: skip
    assert "momentum 0.9900" in text2, text2
    shoot(browser, widget, shots / "04_ema_explorer_2_noise_dragged.png")

    # the end of the paper's schedule: End on the momentum slider, m = 1, a target that never moves
    press(handle, Keys.END)
    text3, _ = wait_redraw(browser, widget, src2, lambda t: "momentum 1.0000" in t, "momentum 1.0 to redraw")
    assert "never follows" in text3, text3
    _wait(browser, lambda _: len(widget.find_elements(By.CSS_SELECTOR, ".widget-output img")) == 2,
          UPDATE_TIMEOUT, "the momentum schedule under the trace")  # fmt: skip
    shoot(browser, widget, shots / "04_ema_explorer_3_momentum_1.png")
    record(NOTEBOOKS[1], default=text0, momentum_099=text1, noise_dragged=text2, momentum_1=text3)
    assert not page_errors(browser)
