"""One router per domain; each handler authenticates, calls one service method,
and maps the result to a response."""
