-- Exports (jobs of kind customer_export) keep their CSV in the blob store until
-- NEXTFLOW_EXPORT_KEEP_S after they ended; the integration replicas' sweep finds the
-- ones still holding a file by this index.
CREATE INDEX jobs_with_file ON jobs (finished_at) WHERE result ? 'file_url';
