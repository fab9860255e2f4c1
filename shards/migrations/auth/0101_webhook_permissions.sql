-- Outbound webhooks (deployments/webhooks): who may manage subscriptions and read
-- their delivery logs. Numbered 0101+ so that it never collides with migrations other
-- services add to this folder at the same time.
UPDATE roles SET permissions = permissions || ARRAY['webhook:read', 'webhook:write']
WHERE name IN ('admin', 'manager');
