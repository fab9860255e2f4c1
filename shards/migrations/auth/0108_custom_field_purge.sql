-- A deleted custom field whose values were purged from every record
-- (POST /v1/auth/fields/{id}/purge): it stays deleted, its key reserved.
ALTER TABLE custom_fields ADD COLUMN purged_at timestamptz;
