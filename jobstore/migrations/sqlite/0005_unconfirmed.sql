-- Jobs whose messages the broker has not confirmed yet, and until when their submitter may
-- still be publishing them (microseconds since the epoch, UTC). A row goes in with its job and
-- out with the confirm; a repair sweep publishes again the queued or scheduled jobs whose
-- deadline passed (their submitter stopped before the confirm). A table of its own, so that
-- recording a confirm deletes a small row instead of rewriting the job's.
CREATE TABLE unconfirmed (
    job_id     TEXT PRIMARY KEY NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    publish_by INTEGER NOT NULL
);

CREATE INDEX unconfirmed_publish_by ON unconfirmed (publish_by);
