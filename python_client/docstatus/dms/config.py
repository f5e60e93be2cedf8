"""Where the DMS finds PostgreSQL and the blob store: the environment, with local defaults.

- ``DOCSTATUS_DSN``: libpq conninfo or postgresql:// URL (empty: libpq defaults, PGHOST etc.)
- ``AZURE_STORAGE_CONNECTION_STRING``: the storage account (default: Azurite on 127.0.0.1:10000)
- ``DOCSTATUS_CONTAINER``: the blob container documents go to (default: ``documents``)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DSN_ENV = "DOCSTATUS_DSN"
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
CONTAINER_ENV = "DOCSTATUS_CONTAINER"
DEFAULT_CONTAINER = "documents"

# Azurite's documented development account, as compose.yml runs it (a public value, not a secret).
AZURITE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)


@dataclass(frozen=True)
class StoreConfig:
    dsn: str
    connection_string: str
    container: str

    @classmethod
    def from_env(cls) -> StoreConfig:
        return cls(
            dsn=os.environ.get(DSN_ENV, ""),
            connection_string=os.environ.get(CONNECTION_STRING_ENV) or AZURITE_CONNECTION_STRING,
            container=os.environ.get(CONTAINER_ENV) or DEFAULT_CONTAINER,
        )
