"""TensorBoard's entry point for the Unfreeze tab.

TensorBoard imports this module at start-up without catching errors, so it imports nothing heavy: the plugin
module is imported in `load`, and TensorFlow only when a conversion runs.
"""

from __future__ import annotations

import argparse

from tensorboard.plugins import base_plugin

from tb_unfreeze.plugin import metadata


class UnfreezeLoader(base_plugin.TBLoader):
    """Adds the plugin's flags and builds the plugin."""

    def define_flags(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group(metadata.PLUGIN_NAME)
        group.add_argument(
            "--unfreeze_model_dirs",
            metavar="DIRS",
            type=str,
            default="",
            help="Comma-separated folders searched for frozen graphs (.pb, .pbtxt) besides the logdir. "
            "Conversions are still written under <logdir>/unfreeze/.",
        )
        group.add_argument(
            "--unfreeze_allowed_hosts",
            metavar="HOSTS",
            type=str,
            default="",
            help="Comma-separated extra Host header values (name or name:port) the Unfreeze tab accepts, e.g. "
            "behind a reverse proxy. By default only the address TensorBoard serves is accepted.",
        )

    def fix_flags(self, flags: argparse.Namespace) -> None:
        import os  # noqa: PLC0415 (keeps the module's import list minimal)

        for d in _split(getattr(flags, "unfreeze_model_dirs", "")):
            if not os.path.isdir(d):
                raise base_plugin.FlagsError(f"--unfreeze_model_dirs: {d} is not a folder; pass existing folders.")

    def load(self, context: base_plugin.TBContext) -> base_plugin.TBPlugin | None:
        from tb_unfreeze.plugin import plugin  # noqa: PLC0415 (deferred so start-up cannot break)

        return plugin.UnfreezePlugin.from_context(context)


def _split(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]
