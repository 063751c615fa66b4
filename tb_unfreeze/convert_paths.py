"""Names of the files a conversion writes (kept apart from conversion.py so readers need not import TensorFlow)."""

MANIFEST = "unfreeze.json"
SAVED_MODEL = "saved_model"  # what TF2 loads (and TF1 too, when the graph has no lowered loops)
SAVED_MODEL_TF1 = "saved_model_tf1"  # written only for graphs with lowered loops: the TF1 Session graph
UNFROZEN_GRAPH = "unfrozen_graph.pb"
