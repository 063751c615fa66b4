"""The Unfreeze tab: a TensorBoard plugin over the tb_unfreeze library.

`loader.UnfreezeLoader` is the entry point TensorBoard imports at start-up; it stays light (no TensorFlow) and
builds `plugin.UnfreezePlugin`, whose routes are documented in `http_api.md`.
"""
