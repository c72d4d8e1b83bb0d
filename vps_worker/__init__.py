"""vps_worker: the executor loop that claims mission steps and runs them."""
