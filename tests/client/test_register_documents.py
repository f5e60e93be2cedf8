"""Client.register_documents: a batch of uploads in one call."""

import pytest

from docstatus import Client, InvalidArgument, TextExtractionStatus

from .helpers import new_blob


@pytest.fixture
def client(db_dsn):
    with Client.connect(db_dsn) as client:
        yield client


def test_registers_a_batch_in_order(client):
    known = client.register_document("docs", new_blob(), "known.pdf")
    names = [new_blob(), known.blob_name, new_blob()]
    documents = client.register_documents(["docs"] * 3, names, ["a.pdf", "ignored.pdf", "b.pdf"],
                                          ["application/pdf", None, None], [10, None, None])
    assert [d.blob_name for d in documents] == names
    assert documents[1] == known
    assert (documents[0].mime_type, documents[0].size_bytes) == ("application/pdf", 10)
    assert {d.text_extraction_status for d in documents} == {TextExtractionStatus.NOT_READY}
    assert client.register_documents([], [], []) == []


def test_a_bad_upload_refuses_the_batch(client):
    names = [new_blob(), new_blob()]
    with pytest.raises(InvalidArgument):
        client.register_documents(["docs", "docs"], names, ["a.pdf", ""])
    with pytest.raises(InvalidArgument):
        client.register_documents(["docs", "docs"], names, ["a.pdf", "b.pdf"], size_bytes=[1, -1])
    with pytest.raises(InvalidArgument):
        client.register_documents(["docs"], names, ["a.pdf", "b.pdf"])
    assert [d.filename for d in client.register_documents(["docs", "docs"], names, ["a.pdf", "b.pdf"])] == [
        "a.pdf", "b.pdf"]
