"""Flower, as an operator sees it: in a real headless Chromium (Debian's), behind basic auth.

Given the ops worker and ``airlock flower`` with a password,
when a browser without credentials opens Flower, it is refused;
when it logs in, the workers page shows our worker online, and the tasks page shows the
finished job by its readable name, with the job id and the shortened code as arguments and
none of the job's secrets. Screenshots go to artifacts/ (flower-workers.png, flower-tasks.png).
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from airlock.client import Airlock
from config.settings import Settings
from tasks.dashboard import FlowerRefused, basic_auth, flower_argv
from tests.conftest import ARTIFACTS
from tests.ops.conftest import FLOWER_PASSWORD, FLOWER_USER, FlowerProcess, free_port, start_flower

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SECRET = "s3cret-token-never-shown"


# --- pure: settings → Flower's arguments -------------------------------------------------

def test_flower_refuses_to_run_without_a_password() -> None:
    with pytest.raises(FlowerRefused, match="AIRLOCK_FLOWER_PASSWORD"):
        basic_auth(Settings(flower_password=None))
    with pytest.raises(FlowerRefused):
        basic_auth(Settings(flower_password=""))  # type: ignore[arg-type]
    with pytest.raises(FlowerRefused, match="','"):
        basic_auth(Settings(flower_password="a,b"))  # type: ignore[arg-type]
    with pytest.raises(FlowerRefused, match="USER"):
        basic_auth(Settings(flower_user="a:b", flower_password="pw"))  # type: ignore[arg-type]
    assert basic_auth(Settings(flower_user="ops", flower_password="pw")) == "ops:pw"  # type: ignore[arg-type]


def test_flower_binds_loopback_by_default_and_never_puts_the_password_on_argv() -> None:
    s = Settings(flower_password="hunter2")  # type: ignore[arg-type]
    argv = flower_argv(s)
    assert "--address=127.0.0.1" in argv and "--port=5555" in argv and "--read_only" in argv
    assert not any("hunter2" in arg for arg in argv)
    assert "--port=6000" in flower_argv(s, port=6000)


# --- the real command --------------------------------------------------------------------

@pytest.mark.integration
def test_airlock_flower_exits_without_a_password(ops_settings: Settings, artifacts: Path) -> None:
    proc = start_flower(ops_settings, artifacts / "flower-nopassword.log", free_port(),
                        AIRLOCK_FLOWER_PASSWORD="")
    assert proc.wait(30) == 2
    assert "refusing to start" in (artifacts / "flower-nopassword.log").read_text()


@pytest.mark.integration
def test_flower_listens_on_loopback_only_and_asks_for_credentials(flower: FlowerProcess) -> None:
    listening = [c.laddr for c in psutil.Process(flower.proc.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and {addr.ip for addr in listening} == {"127.0.0.1"}, listening
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{flower.url}/workers", timeout=5)
    refused.value.close()
    assert refused.value.code == 401
    assert 'Basic realm="flower"' in refused.value.headers.get("WWW-Authenticate", "")
    assert _get(f"{flower.url}/api/workers", "wrong:password") == 401
    assert _get(f"{flower.url}/api/workers", f"{FLOWER_USER}:{FLOWER_PASSWORD}") == 200


def _get(url: str, credentials: str) -> int:
    request = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


# --- in the browser -----------------------------------------------------------------------

@pytest.fixture
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "run scripts/setup-host.sh (chromium)"
    profile = tempfile.mkdtemp(prefix="airlock-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=1600,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _login(driver: Any, user: str, password: str) -> None:
    """What a person does in the basic-auth dialog: every request then carries the header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Basic {token}"}})


def _wait_for(driver: Any, xpath: str, timeout: float = 20.0) -> Any:
    """The first element at ``xpath`` once the page (and its AJAX tables) shows it."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(
            lambda d: (d.find_elements("xpath", xpath) or [None])[0])
    except TimeoutException:
        driver.save_screenshot(str(ARTIFACTS / "flower-failed.png"))
        (ARTIFACTS / "flower-failed.html").write_text(driver.page_source)
        raise AssertionError(f"{xpath} not on {driver.current_url} (flower-failed.png)") from None


@pytest.mark.integration
def test_flower_in_a_browser_shows_the_worker_online_and_the_finished_job(
        flower: FlowerProcess, ops_client: Airlock, ops_settings: Settings, chromium: Any,
        artifacts: Path) -> None:
    node = f"airlock@{ops_settings.hostname}"
    job = ops_client.submit(code="print(6*7)", env={"API_TOKEN": SECRET})
    record = job.wait(60)
    assert record.verdict == "ok" and record.stdout == "42\n"

    chromium.get(f"{flower.url}/workers")  # no credentials: the auth prompt, no page
    assert not chromium.find_elements("id", "workers-table")
    assert node not in chromium.page_source

    _login(chromium, FLOWER_USER, FLOWER_PASSWORD)
    chromium.get(f"{flower.url}/workers")
    row = _wait_for(chromium, f"//tr[.//a[@title='{node}']]")
    status = row.find_elements("xpath", "./td")[1].text
    assert status == "Online", row.text
    chromium.save_screenshot(str(artifacts / "flower-workers.png"))

    chromium.get(f"{flower.url}/tasks?worker={node}")
    row = _wait_for(chromium, f"//table[@id='tasks-table']//tr[contains(., '{job.id}')]")
    assert "airlock.run_job" in row.text and "SUCCESS" in row.text, row.text
    # readable: job id, its tenant and shortened code
    assert f"{record.tenant} python: print(6*7)" in row.text, row.text
    assert SECRET not in chromium.page_source
    chromium.save_screenshot(str(artifacts / "flower-tasks.png"))

    chromium.get(f"{flower.url}/task/{row.get_attribute('id')}")  # rows carry the task id
    _wait_for(chromium, f"//*[contains(text(), '{job.id}')]")
    assert SECRET not in chromium.page_source  # nor on the task's own page
    chromium.save_screenshot(str(artifacts / "flower-task.png"))
