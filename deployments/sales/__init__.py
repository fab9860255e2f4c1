"""Sales: pipelines and stages (unsharded config), deals and orders on their customer's shard."""
