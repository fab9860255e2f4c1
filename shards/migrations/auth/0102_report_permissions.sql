-- Reports (deployments/analytics): who may read them. Numbered 0102 (0101+ keeps clear
-- of migrations other services add to this folder at the same time).
UPDATE roles SET permissions = permissions || ARRAY['report:read']
WHERE name IN ('admin', 'manager', 'viewer');
