"""Quart blueprints: the proxy routes, Codex start-up calls, health and admin."""
