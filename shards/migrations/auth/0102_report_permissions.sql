-- Reports (deployments/analytics) and lead scoring (deployments/ai): who may read
-- reports, and who may train models and run batch scoring. Numbered 0102 (0101+
-- keeps clear of migrations other services add to this folder at the same time).
UPDATE roles SET permissions = permissions || ARRAY['report:read', 'ai:train']
WHERE name IN ('admin', 'manager');
UPDATE roles SET permissions = permissions || ARRAY['report:read']
WHERE name = 'viewer';
