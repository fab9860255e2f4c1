"""Product service: products, price books and prices (unsharded, cached in Redis)."""
