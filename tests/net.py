"""Settings that keep a test's HTTP servers on loopback and on free ports (never the shipped 9090)."""

from __future__ import annotations

LOOPBACK = {"parley_http_host": "127.0.0.1", "parley_ops_host": "127.0.0.1", "parley_ops_port": 0}
