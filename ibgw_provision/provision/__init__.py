"""The provisioning engine: render the desired state, plan it against the host's facts, apply it."""
