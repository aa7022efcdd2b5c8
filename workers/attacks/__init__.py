"""The attack engine (filled in by the following commits)."""
