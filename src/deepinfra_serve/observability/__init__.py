"""Metrics, request ids and access logs: what operators see of each request."""
