"""Development helpers, apart from the library: the demo, an embedded PostgreSQL cluster,
Azurite from npm, free ports. Tests, benchmarks and ``make demo`` use them; no module of
``docstatus`` outside ``dev`` imports them.
"""
