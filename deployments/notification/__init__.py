"""Notifications: the in-app inbox, e-mail, per-user preferences, event rules."""
