"""0008's docstatus_owner with an installer that is not a superuser (as on managed services): the
install works either way; the functions go to docstatus_owner when the installer may manage roles
(CREATEROLE), and stay the installer's, with a NOTICE, when it may not."""

from __future__ import annotations

import itertools
import os

import psycopg
import pytest

from docstatus import migrations

from ..conftest import SCHEMA_SQL

_names = itertools.count()


@pytest.fixture
def installer(pg_server):
    """A login role that is not a superuser, with its own empty database; dropped after the test."""
    role = f"docstatus_installer_{os.getpid()}_{next(_names)}"
    admin = psycopg.connect(pg_server.dsn(pg_server.maintenance_dbname), autocommit=True)

    def make(*options: str):
        admin.execute(f"CREATE ROLE {role} LOGIN CREATEDB {' '.join(options)}")
        admin.execute(f"CREATE DATABASE {role} OWNER {role} TEMPLATE template0")
        return psycopg.conninfo.make_conninfo(pg_server.dsn(role), user=role)

    yield make
    admin.execute(f"DROP DATABASE IF EXISTS {role} WITH (FORCE)")
    admin.execute(f"DROP ROLE IF EXISTS {role}")
    admin.close()


def function_owners(conn) -> set[str]:
    return {owner for (owner,) in conn.execute(
        "SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc"
        " WHERE pronamespace = 'docstatus'::regnamespace AND proname = ANY (%s)",
        (["register_document", "reap_expired_jobs", "claim_jobs", "_require_text"],))}


@pytest.mark.parametrize("how", ["schema.sql", "migrations"])
def test_an_installer_without_createrole_keeps_the_functions_and_says_so(db_dsn, installer, how):
    # db_dsn: the template's install has created docstatus_owner in this cluster already.
    dsn = installer()
    notices = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        if how == "schema.sql":
            conn.execute(SCHEMA_SQL.read_text())
        else:
            migrations.apply(dsn)
        installer_role = conn.execute("SELECT current_user").fetchone()[0]
        assert function_owners(conn) == {installer_role}
        conn.execute("SELECT docstatus.register_document('c', 'b', 'f.pdf')")
    if how == "schema.sql":
        assert any("is no member of docstatus_owner" in n for n in notices), notices


def test_an_installer_with_createrole_hands_the_functions_over(db_dsn, installer):
    dsn = installer("CREATEROLE")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL.read_text())
        assert function_owners(conn) == {"docstatus_owner"}
        doc_id = conn.execute("SELECT id FROM docstatus.register_document('c', 'b', 'f.pdf')").fetchone()[0]
        conn.execute("SELECT docstatus.validate_document(%s, true, 'application/pdf')", (doc_id,))
        assert conn.execute("SELECT count(*) FROM docstatus.claim_jobs('w', '1 minute', 5, true)").fetchone()[0] == 1

