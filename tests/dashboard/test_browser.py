"""The dashboard in a real headless Chromium (Selenium, /usr/bin/chromium + chromedriver)."""

from __future__ import annotations

import pytest
from selenium.common.exceptions import NoAlertPresentException, NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import MALICIOUS, TOKEN
from .helpers import completed, failed, failed_validation, queued, running, uploaded

WAIT = 15


def wait_for(browser, condition, message: str):
    # The live script swaps the page's content: an element read a moment ago may be gone.
    return WebDriverWait(browser, WAIT, poll_frequency=0.1, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(lambda _: condition(), message)


def live(browser) -> None:
    wait_for(browser, lambda: browser.find_element(By.ID, "live-status").text == "live", "no live stream")


def mark_page(browser) -> None:
    """Something only this page load has: gone if the page reloads."""
    browser.execute_script("window.__notReloaded = true")


def not_reloaded(browser) -> bool:
    return browser.execute_script("return window.__notReloaded === true")


def overview_counts(browser) -> dict[tuple[str, str], int]:
    """Read in one script: the live script may swap the table between two element reads."""
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#status-counts tr[data-kind]'),"
        " r => [r.dataset.kind, r.dataset.status, r.querySelector('td.count').textContent]);")
    return {(kind, status): int(count) for kind, status, count in rows}


def test_overview_counts_equal_status_counts_and_follow_changes_live(browser, start_dashboard, client):
    for make in (uploaded, queued, running, completed, failed):
        make(client)
    served = start_dashboard()
    browser.get(served.url + "/")
    live(browser)
    assert overview_counts(browser) == {(str(c.kind), c.status): c.count for c in client.status_counts()}
    mark_page(browser)

    queued(client)  # from another connection
    expected = {(str(c.kind), c.status): c.count for c in client.status_counts()}
    wait_for(browser, lambda: overview_counts(browser) == expected, "the counts did not follow")
    assert not_reloaded(browser)
    wait_for(browser, lambda: browser.find_element(By.CSS_SELECTOR, '#state-counts td[data-state="queued"]').text
             == "2", "the state counts did not follow")


def test_document_page_follows_its_document_and_shows_the_new_job_after_a_retry(browser, start_dashboard, client):
    document_id = failed(client)
    served = start_dashboard()
    browser.get(f"{served.url}/documents/{document_id}")
    live(browser)
    mark_page(browser)
    assert browser.find_element(By.ID, "state").text == "failed"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]")) == 1

    job = client.retry_document(document_id)
    wait_for(browser, lambda: browser.find_element(By.ID, "state").text == "queued", "the state did not follow")
    wait_for(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]")) == 2, "no new job")
    assert browser.find_element(By.CSS_SELECTOR, f'#jobs tr[data-job="{job.id}"]').text.startswith(f"{job.id} 2 ")
    client.mark_ocr_running(document_id)
    wait_for(browser, lambda: browser.find_element(By.ID, "processing-status").text == "ocr running", "no ocr")
    assert not_reloaded(browser)


def test_malicious_filename_renders_as_text(browser, start_dashboard, client):
    document_id = failed(client, error=MALICIOUS, filename=MALICIOUS)
    served = start_dashboard()
    for path in ("/documents", f"/documents/{document_id}", "/"):
        browser.get(served.url + path)
        with pytest.raises(NoAlertPresentException):
            _ = browser.switch_to.alert.text
    browser.get(f"{served.url}/documents/{document_id}")
    assert browser.find_element(By.CSS_SELECTOR, "h1 .filename").text == MALICIOUS
    assert browser.execute_script("return document.querySelectorAll('main script').length") == 0
    browser.get(served.url + "/documents")
    assert browser.find_element(By.CSS_SELECTOR, "#documents td.filename").text == MALICIOUS


def test_actions_off_no_button_and_a_forged_post_is_refused(browser, start_dashboard, client):
    document_id = failed(client)
    served = start_dashboard()
    browser.get(f"{served.url}/documents/{document_id}")
    assert browser.find_elements(By.CSS_SELECTOR, "button[data-action], form.action") == []
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/actions/retry', {method: 'POST', body: new URLSearchParams({document_id: arguments[0]})})"
        "  .then(r => done(r.status), e => done(String(e)));", document_id)
    assert status == 403
    assert client.document_overview(document_id).state == "failed"


def test_actions_on_retry_works_and_a_refusal_shows_the_database_error(browser, start_dashboard, client):
    document_id = failed(client)
    rejected = failed_validation(client, filename="bad.exe")
    served = start_dashboard(allow_actions=True)
    browser.get(f"{served.url}/documents/{document_id}")
    assert browser.find_elements(By.CSS_SELECTOR, "button[data-action]") == []  # not signed in yet
    browser.get(f"{served.url}/login?next=/documents/{document_id}")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    wait_for(browser, lambda: browser.current_url.endswith(f"/documents/{document_id}"), "not back on the page")
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="/actions/retry"]').click()
    wait_for(browser, lambda: "queued again" in browser.find_element(By.ID, "message").text, "retry not confirmed")
    assert client.document_overview(document_id).state == "queued"
    browser.find_element(By.ID, "back").click()
    wait_for(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]")) == 2, "no new job")

    browser.get(f"{served.url}/documents/{rejected}")
    browser.find_element(By.CSS_SELECTOR, 'button[data-action="/actions/retry"]').click()
    message = wait_for(browser, lambda: browser.find_element(By.ID, "message").text, "no message")
    assert message.startswith("DS001: invalid transition of document")
    assert "validate it again" in browser.find_element(By.ID, "hint").text
    assert client.document_overview(rejected).state == "failed"
