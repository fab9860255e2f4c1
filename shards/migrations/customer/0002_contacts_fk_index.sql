-- A plain index on the foreign key: deleting customers (a shard move's cleanup, or a
-- purge) checks contacts by customer_id, and the partial list index cannot serve it.
CREATE INDEX contacts_by_customer_id ON contacts (customer_id);
