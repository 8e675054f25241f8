"""metaseg: few-shot image segmentation by meta-learned initialisations.

Data flows one way through the sub-packages:
shards -> episodes (``metaseg.data``) -> model (``metaseg.models``) -> inner loop and
meta update (``metaseg.meta``) -> evaluation (``metaseg.evaluation``).
"""

__version__ = "0.1.0"
