"""Closing the loop: when to retrain, the challenger, its gates, and a safe rollout."""
