"""What every stage shares: the published reading, time stamps, logging, tasks, backoff."""
