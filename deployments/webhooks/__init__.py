"""Outbound webhooks: subscriptions, signed deliveries, retries, replay."""
