"""The projection store: what the processor writes and the query API reads.

SQLite file in the data dir by default, PostgreSQL with OKR_DATABASE_URL. Tables belong to a
*generation*: replay builds generation g+1 beside the live one and swaps it in atomically.
"""

from services.projectionstore.db import Database, Dialect
from services.projectionstore.schema import PROJECTION_SCHEMA_VERSION, Tables

__all__ = ["PROJECTION_SCHEMA_VERSION", "Database", "Dialect", "Tables"]
