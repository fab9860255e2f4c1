"""One package per domain service: deployment.py (thin Serve class), service.py
(logic), repo.py (all SQL), schemas.py (pydantic models)."""
