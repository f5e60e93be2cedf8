"""Operations: the commands an operator runs, and Prometheus metrics.

- ``docstatus.ops.commands``: ``status``, ``show``, ``jobs``, ``stuck``, ``failures``, ``reap``,
  ``metrics``, plus ``retry`` (``ops.retry``) and ``watch`` (``ops.watch``), registered on the
  ``docstatus`` group by ``docstatus.cli`` (their shared options come from ``docstatus.options``).
- ``docstatus.ops.metrics``: ``serve_metrics`` and ``DocstatusCollector`` (prometheus_client),
  for ``docstatus metrics`` and for a worker's own metrics port.

These modules render: they ask ``docstatus.Client`` (the package's one door to the database)
and print; every rule stays in PostgreSQL.
"""
