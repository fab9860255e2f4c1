"""The ingress deployment: FastAPI app, routes per domain, auth, rate limits, errors."""
