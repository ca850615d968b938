"""Is a provisioned host serving? Health checks, the live connection monitor and how both are shown."""
