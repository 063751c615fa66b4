"""Names of the files a conversion writes (kept apart from conversion.py so readers need not import TensorFlow)."""

MANIFEST = "unfreeze.json"
SAVED_MODEL = "saved_model"
UNFROZEN_GRAPH = "unfrozen_graph.pb"
