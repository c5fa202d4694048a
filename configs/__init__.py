"""Run configs (YAML) and tiny open_clip model configs (JSON), shipped as package data."""
