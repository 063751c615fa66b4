"""The Unfreeze plugin (start-up stub; routes follow)."""

from __future__ import annotations

from tensorboard.plugins import base_plugin

from tb_unfreeze.plugin import metadata


class UnfreezePlugin(base_plugin.TBPlugin):
    plugin_name = metadata.PLUGIN_NAME

    @classmethod
    def from_context(cls, context: base_plugin.TBContext) -> "UnfreezePlugin":
        return cls(context)

    def get_plugin_apps(self) -> dict:
        return {}

    def is_active(self) -> bool:
        return False

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name=metadata.TAB_NAME)
