"""Actions: off unless enabled with a token; each a same-origin POST of a signed-in session with
its CSRF token; the database decides, and its refusal is shown as text."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from docstatus.dashboard.settings import TOKEN_ENV, DashboardSettings

from .conftest import TOKEN
from .helpers import completed, failed, failed_validation


def test_actions_off_offer_no_button_and_refuse_every_post(start_dashboard, client):
    document_id = failed(client)
    served = start_dashboard()
    for path in ("/", f"/documents/{document_id}"):
        assert "data-action" not in served.get(path)[2]
    for path in ("/actions/retry", "/actions/retry-pattern", "/actions/validate", "/actions/reap", "/login"):
        status, _, _ = served.request("POST", path, {"document_id": document_id, "token": TOKEN},
                                      headers={"Origin": served.origin})
        assert status == 403, path
    assert served.get("/login")[0] == 403
    assert client.document_overview(document_id).state == "failed"


def test_actions_need_a_token():
    with pytest.raises(ValueError, match=TOKEN_ENV):
        DashboardSettings(allow_actions=True, action_token="")


def test_action_requests_are_checked_before_anything_runs(start_dashboard, client):
    document_id = failed(client)
    served = start_dashboard(allow_actions=True)
    assert "data-action" not in served.get(f"/documents/{document_id}")[2]  # not signed in
    status, _, page = served.request("POST", "/login", {"token": "wrong"}, headers={"Origin": served.origin})
    assert status == 403 and "Wrong token." in page
    status, _, _ = served.request("POST", "/login", {"token": TOKEN}, headers={"Origin": "http://evil.example"})
    assert status == 403
    cookie, csrf = served.sign_in()
    form = {"document_id": document_id, "csrf": csrf, "back": f"/documents/{document_id}"}
    without_csrf = {"document_id": document_id}
    ours = {"Origin": served.origin, "Cookie": cookie}
    refused = [
        (without_csrf, ours),
        ({**form, "csrf": "0" * 64}, ours),
        (form, {"Origin": served.origin}),  # no session
        (form, {"Origin": served.origin, "Cookie": "docstatus_session=made-up"}),
        (form, {"Origin": "http://evil.example", "Cookie": cookie}),  # another site's form
        (form, {"Origin": "null", "Cookie": cookie}),
        (form, {"Cookie": cookie}),  # neither Origin nor Referer
    ]
    for body, headers in refused:
        status, _, _ = served.request("POST", "/actions/retry", body, headers=headers)
        assert status == 403, (body, headers)
    assert client.document_overview(document_id).state == "failed"
    status, _, page = served.request("POST", "/actions/retry", form,
                                     headers={"Referer": served.origin + "/", "Cookie": cookie})
    assert status == 200 and "queued again" in page
    assert client.document_overview(document_id).state == "queued"


def test_retry_by_pattern_reap_and_refusals_show_the_database_error(start_dashboard, client, conn):
    a = failed(client, "LLM returned invalid JSON at byte 123")
    b = failed(client, "LLM returned invalid JSON at byte 9")
    other = failed(client, "disk full")
    rejected = failed_validation(client)
    done = completed(client)
    served = start_dashboard(allow_actions=True)
    cookie, csrf = served.sign_in()
    headers = {"Origin": served.origin, "Cookie": cookie}
    page = served.get("/", headers=headers)[2]
    assert page.count('data-action="/actions/retry-pattern"') == 2 and 'data-action="/actions/reap"' in page

    pattern = next(p.error_pattern for p in client.failure_summary() if p.documents == 2)
    status, _, page = served.request("POST", "/actions/retry-pattern", {"csrf": csrf, "error_pattern": pattern},
                                     headers=headers)
    assert status == 200 and "2 document(s) queued again." in page
    assert [client.document_overview(i).state for i in (a, b, other)] == ["queued", "queued", "failed"]

    for document_id, expected in ((rejected, "never had a job"), (done, "Only a failed document")):
        status, _, page = served.request("POST", "/actions/retry", {"csrf": csrf, "document_id": document_id},
                                         headers=headers)
        assert status == 409 and "DS001" in page and expected in page
    status, _, page = served.request("POST", "/actions/retry-pattern", {"csrf": csrf, "error_pattern": ""},
                                     headers=headers)
    assert status == 409 and "DS003" in page
    status, _, page = served.request("POST", "/actions/retry", {"csrf": csrf, "document_id": "x"}, headers=headers)
    assert status == 400 and "document_id must be a number" in page

    client.claim_jobs("w1")
    conn.execute("UPDATE docstatus.extraction_jobs SET lease_expires_at = now() - interval '1 s'"
                 " WHERE worker_id IS NOT NULL AND status = 'pending extraction'")
    status, _, page = served.request("POST", "/actions/reap", {"csrf": csrf}, headers=headers)
    assert status == 200 and "1 expired lease(s) reaped." in page


def test_validate_again_reads_the_blob_through_the_dms(start_dashboard, client, azurite):
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        container = service.get_container_client("docs")
        if not container.exists():
            container.create_container()
        container.upload_blob("kept.txt", b"hello", overwrite=True)
    document_id = client.register_document("docs", "kept.txt", "kept.txt", "text/plain", 5).id
    client.validate_document(document_id, False, None, reason="blob store timed out")
    served = start_dashboard(allow_actions=True, blob_connection_string=azurite.connection_string)
    cookie, csrf = served.sign_in()
    status, _, page = served.request("POST", "/actions/validate", {"csrf": csrf, "document_id": document_id},
                                     headers={"Origin": served.origin, "Cookie": cookie})
    assert status == 200 and "validated again: now ready" in page, page
    assert client.document_overview(document_id).state == "queued"


def _run_command(args, env, wait_for: str, timeout: float = 30) -> str:
    process = subprocess.Popen([sys.executable, "-m", "docstatus", "dashboard", *args], env=env,
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if wait_for in line:
                break
    finally:
        process.terminate()
        process.wait(15)
    return "".join(lines)


def test_command_refuses_actions_without_token_and_warns_without_tls(db_dsn, monkeypatch):
    import os

    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    result = subprocess.run([sys.executable, "-m", "docstatus", "dashboard", "--dsn", db_dsn, "--allow-actions"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and TOKEN_ENV in result.stderr
    output = _run_command(["--dsn", db_dsn, "--allow-actions", "--host", "0.0.0.0", "--port", "0"],
                          {**env, TOKEN_ENV: TOKEN}, wait_for="docstatus dashboard on")
    assert "without TLS" in output and "actions on" in output
    output = _run_command(["--dsn", db_dsn, "--port", "0"], env, wait_for="docstatus dashboard on")
    assert "without TLS" not in output and re.search(r"http://127\.0\.0\.1:0/ \(actions off\)", output)
