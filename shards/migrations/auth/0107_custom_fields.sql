-- Custom fields (issue 25): an admin's own fields per object. `key` and `type` never
-- change (values are stored under the key in the record's `custom_fields`, in the
-- type's stored form: deployments/_kit/custom_fields.py); a deleted definition hides
-- its values, which stay until purged, and its key is never given to another field.
CREATE TABLE custom_fields (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    object        text NOT NULL
                  CHECK (object IN ('customers', 'contacts', 'deals', 'leads', 'tickets',
                                    'products')),
    key           text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$'),
    label         text NOT NULL CHECK (length(label) BETWEEN 1 AND 200),
    description   text,
    type          text NOT NULL
                  CHECK (type IN ('text', 'long_text', 'number', 'decimal', 'date', 'datetime',
                                  'boolean', 'single_select', 'multi_select', 'email', 'url',
                                  'phone')),
    required      boolean NOT NULL DEFAULT false,
    default_value jsonb,
    options       jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(options) = 'array'),
    created_by    bigint REFERENCES users (id),
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX custom_fields_by_key ON custom_fields (object, key);

-- Admins define fields; everyone reads them (GET .../schema, GET /v1/auth/fields).
UPDATE roles SET permissions = permissions || ARRAY['field:write'] WHERE name = 'admin';
