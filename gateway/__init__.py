"""Switchboard: a cost-aware, OpenAI-compatible model gateway for customer-service bots."""

__version__ = "0.1.0"
