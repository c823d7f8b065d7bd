"""`python -m app`: the etcdpy server (same entry point as the `etcdpy` console script)."""

from __future__ import annotations

from app.cli import main

raise SystemExit(main())
