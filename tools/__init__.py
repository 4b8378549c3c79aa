"""Long-running checks (chaos, soak); run as modules from the repository root: python -m tools.chaos."""
