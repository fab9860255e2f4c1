"""Customers (accounts) and their contacts, sharded by customer."""
