"""The base of every resource: each field falls back to its environment variable, then to its one default."""

from __future__ import annotations

from typing import ClassVar

from dagster import ConfigurableResource

from .domain.settings import setting


class FromSettings(ConfigurableResource):
    SETTINGS: ClassVar[dict[str, str]] = {}  # field -> environment variable

    def get(self, field: str):
        """The field as set in run config, else its environment variable, else the one default."""
        value = getattr(self, field)
        return setting(self.SETTINGS[field]) if value is None else value
