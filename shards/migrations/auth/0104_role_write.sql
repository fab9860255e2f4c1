-- Admins change roles' record scopes and hidden fields over the API
-- (`PATCH /auth/roles/{name}`, deployments/auth/roles.py).
UPDATE roles SET permissions = permissions || ARRAY['role:write']
WHERE name = 'admin' AND NOT 'role:write' = ANY (permissions);
