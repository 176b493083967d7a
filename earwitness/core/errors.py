"""Errors every layer may raise or catch, kept here so that catching one never imports its raiser."""

from __future__ import annotations


class ConfigError(Exception):
    """A config file that cannot be read or does not validate; the message names the key path."""
