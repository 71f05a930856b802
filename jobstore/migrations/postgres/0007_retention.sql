-- Finished jobs by type and by when they ended, for the retention sweep: it finds the types by
-- skipping through this index, then deletes each type's oldest finished jobs past their
-- group's retention. Only finished jobs are in it; its condition is written as the sweep's
-- statements write it, so the planner knows it may use it.
CREATE INDEX jobs_finished ON jobs (type, finished_at)
    WHERE status IN ('cancelled', 'dead', 'failed', 'succeeded');

-- A final job without an end time would be kept for ever: it ended when it last changed.
UPDATE jobs SET finished_at = updated_at
    WHERE finished_at IS NULL AND status IN ('cancelled', 'dead', 'failed', 'succeeded');
