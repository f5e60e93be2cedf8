"""Operations: the commands an operator runs, and Prometheus metrics.

- ``docstatus.ops.commands``: ``status``, ``show``, ``jobs``, ``stuck``, ``failures``, ``reap``,
  ``metrics``, plus ``retry`` (``ops.retry``) and ``watch`` (``ops.watch``), registered on the
  ``docstatus`` group by ``docstatus.cli`` (they use its ``--dsn`` option, so import that first).
- ``docstatus.ops.metrics``: ``serve_metrics`` and ``DocstatusCollector`` (prometheus_client),
  for ``docstatus metrics`` and for a worker's own metrics port.

Every query is a named file in ``docstatus/ops/sql/``; every rule stays in PostgreSQL.
"""
