"""The operator console at /console/: server-rendered pages over the same modules the CLI and
the API read through, in the server's own process and database.

- site.py: the routes; guard.py: what stands in front of them (off, headers, who, CSRF);
- auth.py: the token, sessions, CSRF tokens and the login rate limit; state.py: what the
  console keeps while the server runs;
- pages/: one module per page and its actions; render.py, charts.py: templates and charts;
- audit.py: the audit log; replays.py: replays of many deliveries, in batches with progress.

Templates and assets (one stylesheet, one script) are package data: no CDN, no build step.
"""
