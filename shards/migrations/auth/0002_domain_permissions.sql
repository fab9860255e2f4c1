-- Permissions of the Product, Sales, Marketing and Support services.
--   *:read / *:write / *:delete  read, create and update, soft delete and restore
--   deal:assign, ticket:assign   give a record to someone other than yourself
--   lead:convert                 turn a lead into customer + contact (+ deal)
--   pipeline:write, form:write, queue:write, sla:write   configuration
UPDATE roles SET permissions = permissions || ARRAY[
    'product:read', 'product:write', 'product:delete',
    'pipeline:read', 'pipeline:write',
    'deal:read', 'deal:write', 'deal:delete', 'deal:assign',
    'order:read', 'order:write', 'order:delete',
    'campaign:read', 'campaign:write', 'campaign:delete',
    'lead:read', 'lead:write', 'lead:delete', 'lead:convert',
    'form:read', 'form:write',
    'ticket:read', 'ticket:write', 'ticket:delete', 'ticket:assign',
    'queue:read', 'queue:write', 'sla:read', 'sla:write']
WHERE name IN ('admin', 'manager');

UPDATE roles SET permissions = permissions || ARRAY[
    'product:read', 'pipeline:read',
    'deal:read', 'deal:write',
    'order:read', 'order:write',
    'campaign:read',
    'lead:read', 'lead:write', 'lead:convert',
    'form:read',
    'ticket:read', 'ticket:write',
    'queue:read', 'sla:read'],
    description = 'Works customers, deals, leads and tickets day to day'
WHERE name = 'agent';

UPDATE roles SET permissions = permissions || ARRAY[
    'product:read', 'pipeline:read', 'deal:read', 'order:read', 'campaign:read',
    'lead:read', 'form:read', 'ticket:read', 'queue:read', 'sla:read'],
    description = 'Reads everything, changes nothing'
WHERE name = 'viewer';
