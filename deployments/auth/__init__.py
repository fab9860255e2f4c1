"""Users, roles, permissions, refresh tokens and API keys (unsharded `auth` database)."""
