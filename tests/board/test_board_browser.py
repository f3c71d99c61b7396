"""The board in a real browser: Debian's Chromium, headless, driven by Selenium through Debian's
chromedriver (``/usr/bin/chromium``, ``/usr/bin/chromedriver``; ``.ci/run`` installs them with
apt-get — nothing here downloads a browser or a driver), against the two real nodes of
``conftest.py``.

Log in; submit a job at bank's board; approve it on shop's board; watch bank's DAG go from
proposed to running to done without reloading; open the ROC plot; a job failing at the host
shows the host's error on the guest's board; reject a proposal (whose name is a
``<script>``: it shows as text); revoke a grant and see the next job refused; a viewer gets
no buttons and another node's token opens nothing. Each test saves a screenshot under its
output folder (``tmp_path``; also copied to ``$ATOLL_SCREENSHOTS`` when that is set).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from boardfed import job_text

pytestmark = pytest.mark.timeout(300)

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")
XSS_NAME = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and DRIVER.exists()):
        msg = ("Debian's Chromium is not installed (apt-get install -y chromium chromium-driver): the board's "
               f"browser tests need {CHROMIUM} and {DRIVER}")
        if os.environ.get("CI"):
            pytest.fail(msg + " — .ci/run should have installed them")
        pytest.skip(msg)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--window-size=1280,900", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, fn, timeout: float = 30, what: str = "the page"):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def safe(d):
        try:
            return fn(d)
        except (NoSuchElementException, StaleElementReferenceException):
            return False

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(safe, f"waiting for {what}")


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def _all(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _logged_out(driver, org) -> None:
    """Bank's and shop's boards are different origins: each keeps its own token in the tab."""
    driver.get(f"{org.url}/board/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    _wait(driver, lambda d: _css(d, "#token"), what="the login form")


def _login(driver, org, who: str = "admin", page: str = "#/jobs") -> None:
    _logged_out(driver, org)
    _css(driver, "#token").send_keys(org.tokens[who])
    _css(driver, "#login").click()
    _wait(driver, lambda d: _css(d, "#nav").is_displayed() and org.name in _css(d, "#node-name").text, what="login")
    driver.get(f"{org.url}/board/{page}")
    _wait(driver, lambda d: d.execute_script("return document.body.dataset.page") == page.strip("#/").split("/")[0],
          what=page)


def _shot(driver, tmp_path: Path, name: str) -> Path:
    out = tmp_path / f"{name}.png"
    driver.save_screenshot(str(out))
    assert out.stat().st_size > 10_000
    if os.environ.get("ATOLL_SCREENSHOTS"):
        Path(os.environ["ATOLL_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(os.environ["ATOLL_SCREENSHOTS"]) / out.name)
    return out


def _job_state(driver) -> str:
    return _css(driver, "#job-state .pill").get_attribute("data-state")


def _open_job(driver, org, job_id: str) -> None:
    driver.get(f"{org.url}/board/#/job/{job_id}")
    _wait(driver, lambda d: _css(d, "#job-state .pill"), what="the job page")


def test_submit_approve_at_the_partner_and_watch_the_dag_go_live(board_fed, browser, tmp_path):
    bank, shop = board_fed["bank"], board_fed["shop"]
    _login(browser, bank)
    _css(browser, "details summary").click()
    browser.execute_script("document.getElementById('job-text').value = arguments[0]", job_text("browser_live"))
    _css(browser, "#submit-job").click()
    _wait(browser, lambda d: "#/job/" in d.current_url and _css(d, "#job-state .pill"), what="the new job's page")
    job_id = browser.current_url.split("#/job/", 1)[1]
    # record every job state and task cell the page shows, and mark this page: a reload would lose both
    browser.execute_script("""
        window.__samePage = true; window.__jobStates = []; window.__cells = {};
        const note = () => {
          const s = document.querySelector('#job-state .pill');
          if (s && window.__jobStates[window.__jobStates.length - 1] !== s.dataset.state) window.__jobStates.push(s.dataset.state);
          for (const c of document.querySelectorAll('#dag .task')) {
            const k = c.dataset.party + '/' + c.dataset.step;
            const seen = (window.__cells[k] = window.__cells[k] || []);
            if (seen[seen.length - 1] !== c.dataset.state) seen.push(c.dataset.state);
          }
        };
        note();
        new MutationObserver(note).observe(document.getElementById('main'), {childList: true, subtree: true});
    """)
    assert _job_state(browser) == "proposed"
    assert len(_all(browser, "#dag .task")) == 14  # 7 steps x 2 parties
    bank_window = browser.current_window_handle
    browser.switch_to.new_window("tab")
    _login(browser, shop, page="#/approvals")
    card = _wait(browser, lambda d: _css(d, f".approval[data-job='{job_id}']"), what="the proposal at shop")
    assert "two_party" in card.text and "purchases" in card.text and "credit" in card.text  # parameters, data
    assert card.find_elements("css selector", "svg.dag")
    card.find_element("css selector", "button.approve").click()
    _wait(browser, lambda d: "approve browser_live: done" in _css(d, "#flash").text, what="the approval")
    _shot(browser, tmp_path, "approved_at_shop")
    browser.close()
    browser.switch_to.window(bank_window)
    _wait(browser, lambda d: _job_state(d) == "done", timeout=120, what="the job to end")
    assert browser.execute_script("return window.__samePage") is True  # never reloaded
    states = browser.execute_script("return window.__jobStates")
    assert states[0] == "proposed" and "running" in states and states[-1] == "done", states
    cells = browser.execute_script("return window.__cells")
    assert len(cells) == 14 and all(seen[-1] == "done" and len(seen) >= 2 for seen in cells.values()), cells
    assert {s for seen in cells.values() for s in seen} >= {"pending", "done"}
    # the metrics and the ROC plot the report made
    img = _wait(browser, lambda d: _css(d, "img[data-plot^='roc_'][data-loaded='1']"), timeout=60, what="the ROC plot")
    assert browser.execute_script("return arguments[0].naturalWidth", img) > 100
    assert "auc" in _css(browser, "#metric-table").text
    # this party's model part: its own 13 coefficients, and the warning that 2 iterations did not converge
    _wait(browser, lambda d: _css(d, ".model-weights"), what="the model part")
    assert len(_all(browser, ".model-weights tbody tr")) == 13
    assert "did not converge in 2 iterations" in _css(browser, ".model-warning").text
    browser.execute_script("arguments[0].scrollIntoView()", img)
    img.click()
    _shot(browser, tmp_path, "job_done_roc")
    browser.execute_script("document.getElementById('dag').scrollIntoView()")
    _shot(browser, tmp_path, "job_done_dag")
    logs = _css(browser, "#log").text
    assert "INFO" in logs
    from selenium.webdriver.support.ui import Select

    Select(_css(browser, "#log-party")).select_by_value("host_0")
    assert "its log stays there" in _css(browser, "#log-note").text  # another node's log is not shown here


def test_a_failure_at_the_host_shows_its_error_on_the_guests_board(board_fed, browser, tmp_path):
    bank, shop = board_fed["bank"], board_fed["shop"]
    with open(shop.folder / "fragile.csv", "a") as f:  # the file no longer has its registered hash
        f.write("999999\n")
    j = bank.client().post("/jobs", {"job_text": job_text("browser_host_fails", host_data="fragile")})
    board_fed.pending_at("shop", j["id"])
    shop.client().post(f"/jobs/{j['id']}/approve")
    _login(browser, bank)
    _open_job(browser, bank, j["id"])
    _wait(browser, lambda d: _job_state(d) == "failed", timeout=90, what="the job to fail")
    msg = _css(browser, "#job-message").text  # whichever party's report reached bank first, it names shop
    assert "shop" in msg and "StepRefused at step 'read'" in msg, msg
    errors = _wait(browser, lambda d: _css(d, "#error-table"), what="the failures table").text
    assert "host_0" in errors and "read" in errors, errors
    cell = _css(browser, "#dag .task[data-party='host_0'][data-step='read']")
    assert cell.get_attribute("data-state") == "failed"
    _shot(browser, tmp_path, "host_failure_on_guest_board")


def test_reject_a_proposal_with_a_reason_that_is_a_script(board_fed, browser, tmp_path):
    """A job name cannot be markup any more (names are checked: they name run folders), so the
    partner's free text — the rejection reason — carries the script; it must show as text."""
    from atoll.node.client import NodeError

    bank, shop = board_fed["bank"], board_fed["shop"]
    with pytest.raises(NodeError, match="must be 1-64 letters"):
        bank.client().post("/jobs", {"job_text": job_text(XSS_NAME)})
    j = bank.client().post("/jobs", {"job_text": job_text("browser_rejected")})
    board_fed.pending_at("shop", j["id"])
    _login(browser, shop, page="#/approvals")
    card = _wait(browser, lambda d: _css(d, f".approval[data-job='{j['id']}']"), what="the proposal")
    assert "browser_rejected" in card.find_element("css selector", "h2").text
    card.find_element("css selector", "input[name=reason]").send_keys(XSS_NAME)
    card.find_element("css selector", "button.reject").click()
    _wait(browser, lambda d: "reject" in _css(d, "#flash").text and "done" in _css(d, "#flash").text, what="reject")
    assert browser.execute_script("return window.__xss") is None
    _shot(browser, tmp_path, "rejected_at_shop")
    _login(browser, bank)
    _wait(browser, lambda d: "browser_rejected" in _css(d, "#jobs").text, what="the job list")
    _open_job(browser, bank, j["id"])
    _wait(browser, lambda d: _job_state(d) == "rejected", timeout=30, what="the rejection at bank")
    message = _css(browser, "#job-message").text
    assert XSS_NAME in message and "node 'shop'" in message  # shown as text
    assert browser.execute_script("return window.__xss") is None
    assert not browser.execute_script("return document.querySelector('main img[src=\"x\"]')")
    _shot(browser, tmp_path, "rejected_at_bank")


def test_revoke_a_grant_on_the_board_and_the_next_job_is_refused(board_fed, browser, tmp_path):
    from boardfed import COMPONENTS

    bank, shop = board_fed["bank"], board_fed["shop"]
    shop.client().post("/data", {"name": "revocable", "path": str(shop.folder / "purchases.csv"), "id": "id"})
    g = shop.client().post("/grants", {"dataset": "revocable", "grantee": "bank", "components": COMPONENTS})
    odd = shop.folder / "odd_columns.csv"  # a column name that is markup: the registry shows it as text
    odd.write_text("id,<img src=x onerror=\"window.__xss=3\">\n1,2\n")
    shop.client().post("/data", {"name": "odd", "path": str(odd), "id": "id"})
    _login(browser, shop, page="#/data")
    button = _wait(browser, lambda d: _css(d, f"button.revoke[data-grant='{g['id']}']"), what="the grant")
    assert '<img src=x onerror="window.__xss=3">' in _css(browser, "#datasets").text
    assert browser.execute_script("return window.__xss") is None
    assert not browser.execute_script("return document.querySelector('main img[src=\"x\"]')")
    button.click()
    _wait(browser, lambda d: not _all(d, f"button.revoke[data-grant='{g['id']}']"), what="the revocation")
    row = next(r for r in _all(browser, "#grants tbody tr") if g["id"] in r.text)
    assert "revoked" in row.text
    _shot(browser, tmp_path, "grant_revoked")
    j = bank.client().post("/jobs", {"job_text": job_text("browser_after_revoke", host_data="revocable")})
    _login(browser, bank)
    _open_job(browser, bank, j["id"])
    _wait(browser, lambda d: _job_state(d) == "rejected", timeout=30, what="the refusal")
    assert "was revoked" in _css(browser, "#job-message").text
    assert {c.get_attribute("data-state") for c in _all(browser, "#dag .task")} == {"pending"}  # nothing ran


def test_a_viewer_gets_no_buttons_and_another_nodes_token_opens_nothing(board_fed, browser, tmp_path):
    bank, shop = board_fed["bank"], board_fed["shop"]
    _logged_out(browser, shop)
    browser.get(f"{shop.url}/board/#/approvals")
    assert _css(browser, "#login-form") and not _css(browser, "#nav").is_displayed()
    _css(browser, "#token").send_keys(bank.tokens["admin"])
    _css(browser, "#login").click()
    _wait(browser, lambda d: "login refused" in _css(d, "#flash").text, what="the refusal")
    assert not _css(browser, "#nav").is_displayed()
    j = bank.client().post("/jobs", {"job_text": job_text("browser_viewer")})
    board_fed.pending_at("shop", j["id"])
    _login(browser, shop, who="viewer", page="#/approvals")
    assert "vera (viewer)" in _css(browser, "#who").text
    card = _wait(browser, lambda d: _css(d, f".approval[data-job='{j['id']}']"), what="the proposal")
    assert not card.find_elements("css selector", "button") and "You are a viewer" in card.text
    _shot(browser, tmp_path, "viewer_approvals")
    browser.get(f"{shop.url}/board/#/data")
    _wait(browser, lambda d: _css(d, "#grants"), what="the data page")
    assert not _all(browser, "button.revoke") and not _all(browser, "#register-form, #grant-form")
    browser.get(f"{shop.url}/board/#/audit")
    status = _wait(browser, lambda d: _css(d, "#verify-status"), what="the chain check")
    assert status.get_attribute("data-ok") == "true" and "Audit chain OK" in status.text
    assert "proposal.received" in _css(browser, "#audit").text
    browser.get(f"{shop.url}/board/#/partners")
    assert "bank" in _wait(browser, lambda d: _css(d, "#partners"), what="partners").text
    shop.client().post(f"/jobs/{j['id']}/reject", {"reason": "tidy up"})
