"""The search panel in a real browser: JupyterLab 4 and Notebook 7 in Debian's Chromium, driven by Playwright.

A Jupyter server on a free loopback port, with a random token and its own config, runtime, data and
settings folders, serves a copy of the notebook and `imgsim/`, so nothing in the repository changes. The
kernel inherits the IMGSIM_* settings: random weights, a folder of drawn pictures, a temporary Qdrant
folder and report. The test runs all cells, uploads files through the panel's button (the browser's file
chooser), reads the matches' file names in the page and opens the "why?" view of their heat maps. With
IMGSIM_SAVE_SCREENSHOT=1 (and the shared photos and trained weights of tests/conftest.py), a second test runs
the notebook on those photos in JupyterLab and saves the panel, its "why?" view open, as
images/search_panel.jpg. Without /usr/bin/chromium or Playwright the tests are skipped with the reason, except
under CI=true, where they fail.
"""

import importlib.util
import json
import os
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
from conftest import NOTEBOOK, ROOT, SHARED_PHOTOS, save_picture
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
NOTEBOOK_RUN_MS = 300_000
PAGE_MS = 60_000
FRONT_ENDS = {  # jupyter sub-command, the app class that exposes `window.jupyterapp`, the notebook's URL path
    "JupyterLab 4": ("lab", "LabApp", f"/lab/tree/{NOTEBOOK.name}"),
    "Notebook 7": ("notebook", "JupyterNotebookApp", f"/notebooks/{NOTEBOOK.name}"),
}
USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},  # render every cell, not only visible ones
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": False},
}
KERNEL_IDLE = """() => {
  const notebook = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = notebook && notebook.sessionContext && notebook.sessionContext.session?.kernel;
  return !!(kernel && notebook.sessionContext.isReady && kernel.connectionStatus === "connected"
            && kernel.status === "idle");
}"""


def require_browser() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("Playwright (pip install -r requirements-dev.txt)")
    if missing:
        reason = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class JupyterServer:
    """`jupyter lab` or `jupyter notebook` serving `root`, everything it writes kept under `home`."""

    def __init__(self, front_end: str, root: Path, home: Path, settings: dict[str, str]):
        self.command, app_class, self.notebook_path = FRONT_ENDS[front_end]
        self.port, self.token = free_port(), secrets.token_hex(16)
        for name, values in USER_SETTINGS.items():
            path = home / "settings" / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        (home / "config").mkdir()
        # jupyter-lsp runs `npm prefix --global` at every start: slow, and it writes under ~/.npm
        no_lsp = {"ServerApp": {"jpserver_extensions": {"jupyter_lsp": False}}}
        (home / "config" / "jupyter_server_config.json").write_text(json.dumps(no_lsp))
        inherited = {name: value for name, value in os.environ.items() if not name.startswith(("IMGSIM_", "QDRANT_"))}
        inherited.pop("JUPYTER_TOKEN", None)
        self.env = inherited | {f"IMGSIM_{name}": value for name, value in settings.items()}
        self.env |= {
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
            "IPYTHONDIR": str(home / "ipython"),
        }
        self.arguments = [
            *(sys.executable, "-m", "jupyter", self.command, "--no-browser", "--allow-root"),
            *("--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0"),
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            f"--{app_class}.expose_app_in_browser=True",
        ]
        self.root, self.log_path = root, home / "server.log"
        self.process = None

    @property
    def notebook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.notebook_path}?token={self.token}"

    def api(self, method: str, path: str):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def __enter__(self):
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                self.arguments,
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server stopped:\n{self.log_path.read_text()[-3000:]}"
            try:
                self.api("GET", "/api/status")
                return self
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"the server did not answer within 60 s:\n{self.log_path.read_text()[-3000:]}")

    def __exit__(self, error_type, *_):
        """Shut the kernels and the server down through the API; kill the process group only if that fails."""
        try:
            for kernel in self.api("GET", "/api/kernels"):
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
            self.api("POST", "/api/shutdown")
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            if error_type is None:
                raise AssertionError(
                    f"the server did not shut down cleanly:\n{self.log_path.read_text()[-3000:]}"
                ) from error


def choose_file(page, upload_button, path: Path) -> None:
    """Pick a file in the browser's file chooser: FileUpload's <input type=file> is never attached to the page."""
    with page.expect_file_chooser() as chooser:
        upload_button.click()
    chooser.value.set_files(str(path))


def open_notebook_and_run_all(page, server: JupyterServer, run_ms: int = NOTEBOOK_RUN_MS):
    """The notebook's page with every cell run, and its search panel once it shows."""
    page.set_default_timeout(PAGE_MS)
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.goto(server.notebook_url)
    page.wait_for_function(KERNEL_IDLE, polling=250)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    panel = page.locator(".imgsim-panel")
    from playwright.sync_api import expect

    expect(panel.locator(".widget-upload")).to_be_visible(timeout=run_ms)
    return panel


def serve_a_copy(root: Path) -> None:
    """The notebook and `imgsim/` copied into `root`, for a server whose browser must change nothing here."""
    shutil.copytree(ROOT / "imgsim", root / "imgsim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(NOTEBOOK, root)


def make_pictures(folder: Path) -> None:
    for label, seeds in {"circles": range(0, 5), "squares": range(5, 10), "stripes": range(10, 14)}.items():
        for seed in seeds:
            save_picture(folder / label / f"picture_{seed}.jpg", seed)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_the_search_panel_finds_an_uploaded_copy_in_a_real_browser(front_end, tmp_path):
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    make_pictures(tmp_path / "images")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    Image.open(tmp_path / "images/circles/picture_3.jpg").resize((200, 150)).save(uploads / "my photo.jpg")
    (uploads / "notes.jpg").write_text("these are notes, not a picture")
    (uploads / "too big.jpg").write_bytes(bytes(10_200_000))  # over the panel's 10 MB, under Jupyter's 10 MiB
    root = tmp_path / "served"
    serve_a_copy(root)
    served_notebook = (root / NOTEBOOK.name).read_bytes()
    settings = {"IMAGE_DIR": str(tmp_path / "images"), "WEIGHTS": "none", "MODEL": "resnet18", "TOP_K": "5"}
    settings |= {"QDRANT_PATH": str(tmp_path / "qdrant"), "REPORT": str(tmp_path / "report/run_report.json")}
    screenshot = tmp_path / "search_panel.png"

    with JupyterServer(front_end, root, tmp_path / "jupyter", settings) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        panel = open_notebook_and_run_all(page, server)
        upload_button = panel.locator(".widget-upload")

        choose_file(page, upload_button, uploads / "my photo.jpg")

        results = panel.locator(".imgsim-result")
        expect(results).to_have_count(5)
        expect(results.first).to_contain_text("circles/picture_3.jpg")
        expect(results.first.locator("img")).to_be_visible()
        expect(panel).to_contain_text("query: my photo.jpg")

        second = results.nth(1).locator("code").inner_text()
        results.nth(1).get_by_role("button", name="more like this").click()

        expect(panel).to_contain_text(f"more like: {second}")
        expect(panel).to_contain_text("recommend query")
        expect(results.locator("code", has_text=second)).to_have_count(0)
        expect(panel.locator(".imgsim-why")).to_have_count(0)
        panel.get_by_role("button", name="why?").click()
        expect(panel.locator(".imgsim-why img")).to_have_count(2 * 5)  # the query's map and the result's, for each
        expect(results.first.locator(".imgsim-why img").last).to_be_visible()
        expect(results.first).to_contain_text("why: the query's part of")
        panel.screenshot(path=str(screenshot))

        choose_file(page, upload_button, uploads / "notes.jpg")
        expect(panel).to_contain_text("cannot use notes.jpg as a query: not an image Pillow can read")
        choose_file(page, upload_button, uploads / "too big.jpg")
        expect(panel).to_contain_text("too big.jpg is 10.2 MB, more than the 10 MB a Jupyter connection carries")
        choose_file(page, upload_button, uploads / "my photo.jpg")
        expect(panel).to_contain_text("5 results of a query")
        expect(results.first).to_contain_text("circles/picture_3.jpg")
        browser.close()

    assert (root / NOTEBOOK.name).read_bytes() == served_notebook, "the browser must not save the notebook"
    assert Image.open(screenshot).width > 600


SCREENSHOT_QUERY = "dress/009b3c31-fb62-45c0-be9a-37a5c238cb88.jpg"  # the README's query: a navy dress


def test_a_screenshot_of_the_panel_on_the_shared_photos_with_trained_weights(tmp_path, trained_weights):
    """images/search_panel.jpg: the panel on the 1,000 shared photos with the trained weights, "why?" open."""
    if os.environ.get("IMGSIM_SAVE_SCREENSHOT") != "1":
        pytest.skip("makes images/search_panel.jpg only when IMGSIM_SAVE_SCREENSHOT=1")
    if not SHARED_PHOTOS.is_dir():
        pytest.skip(f"{SHARED_PHOTOS} is not there")
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    root = tmp_path / "served"
    serve_a_copy(root)
    settings = {"IMAGE_DIR": str(SHARED_PHOTOS), "WEIGHTS": str(trained_weights), "PLANT_DUPLICATES": "60"}
    settings |= {"QDRANT_PATH": str(tmp_path / "qdrant"), "REPORT": str(tmp_path / "report/run_report.json")}
    screenshot = tmp_path / "search_panel.png"
    with JupyterServer("JupyterLab 4", root, tmp_path / "jupyter", settings) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 2400})  # tall enough for the maps under the cards
        panel = open_notebook_and_run_all(page, server, run_ms=1_800_000)
        panel.locator("input[type=text]").fill(SCREENSHOT_QUERY)
        panel.locator("input[type=text]").press("Enter")
        expect(panel).to_contain_text(f"query: {SCREENSHOT_QUERY}")
        panel.get_by_role("button", name="why?").click()
        expect(panel.locator(".imgsim-why img")).to_have_count(2 * 5)
        panel.evaluate("panel => panel.scrollIntoView({block: 'start'})")  # the maps below the cards in view too
        panel.screenshot(path=str(screenshot), type="jpeg", quality=80)
        browser.close()
    shutil.copy(screenshot, ROOT / "images" / "search_panel.jpg")
