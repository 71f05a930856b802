-- Until when a job's submitter may still be publishing it; NULL once the broker confirmed its
-- message. A repair sweep publishes again the queued or scheduled jobs whose deadline passed
-- (their submitter stopped before the confirm).
ALTER TABLE jobs ADD COLUMN publish_by timestamptz;

CREATE INDEX jobs_publish_by ON jobs (publish_by) WHERE publish_by IS NOT NULL;
