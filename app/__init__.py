"""Real-time credit-card fraud scoring service."""
