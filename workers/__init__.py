"""workers: the RQ jobs that run the deploy pipeline, one module per step."""
