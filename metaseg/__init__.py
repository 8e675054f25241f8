"""metaseg: few-shot image segmentation by meta-learned initialisations.

Data flows one way through the sub-packages:
shards -> episodes (``metaseg.data``) -> model (``metaseg.models``) -> checkpoints
(``metaseg.checkpoints``) -> inner loop and meta update (``metaseg.meta``) -> evaluation
(``metaseg.evaluation``); the offline builders that write the shards (``metaseg.datasets``,
``metaseg.tfds``) sit above them, the runs (``metaseg.pipeline``) and the commands
(``metaseg.flags``, ``metaseg.cli``, ``metaseg.app``) on top. Each package imports only the
ones before it, and no two modules import each other: ``tests/test_layering.py`` holds the
layers and checks them (``python -m tests.test_layering`` prints the import graph).
"""

__version__ = "0.1.0"
