"""The worker side of a checkout: the engine (the one writer of its state), its steps, the sweeps."""
