-- Activities (notes, tasks, calls, meetings, logged e-mails; issue 25).
--   activity:read    see activities (and them on a customer's timeline)
--   activity:write   log and change them, complete tasks
--   activity:delete  soft delete and restore
-- An activity belongs to its owner (who logged it); a task's assignee may also read
-- and change it. Agents see their team's activities and change their own.
UPDATE roles SET permissions = permissions || ARRAY[
    'activity:read', 'activity:write', 'activity:delete']
WHERE name IN ('admin', 'manager');

UPDATE roles SET permissions = permissions || ARRAY['activity:read', 'activity:write'],
    scopes = scopes || '{"activity:read": "team", "activity:write": "own"}'
WHERE name = 'agent';

UPDATE roles SET permissions = permissions || ARRAY['activity:read']
WHERE name = 'viewer';
