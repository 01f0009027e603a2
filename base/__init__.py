"""The shared kernel: errors, limits, units, logging set-up. Imports nothing of Airlock's."""
