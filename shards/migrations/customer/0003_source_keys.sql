-- Records made by another service's idempotent operation (a lead conversion) carry
-- that operation's key. A customer with a source key is placed by a stable hash of it
-- and a contact lives with its customer, so these per-shard unique indexes make a
-- retry find the record it made instead of making a second one.
ALTER TABLE customers ADD COLUMN source_key text;
ALTER TABLE contacts ADD COLUMN source_key text;
CREATE UNIQUE INDEX customers_source_key ON customers (source_key) WHERE source_key IS NOT NULL;
CREATE UNIQUE INDEX contacts_source_key ON contacts (source_key) WHERE source_key IS NOT NULL;
