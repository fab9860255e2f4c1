-- Privacy exports (deployments/integration/privacy.py): everything held about one
-- person, across every service, as one archive. Admins only by default: it reads
-- every user's notifications about the person and every record of theirs.
UPDATE roles SET permissions = permissions || ARRAY['privacy:export']
WHERE name = 'admin' AND NOT 'privacy:export' = ANY(permissions);
