"""Plumbing shared by every service: errors, the Principal, ids, pages and lists."""
