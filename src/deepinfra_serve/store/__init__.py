"""What outlives a request and a process: files, batches and their lines, webhook jobs."""
