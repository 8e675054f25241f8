"""The ``metaseg`` command: segment your own images with a meta-learned initialisation.

One module per subcommand, each with ``add_parser(subparsers, parents)`` and ``run(args) -> exit
code``: ``adapt`` (fine-tune an initialisation on a support folder, segment a query
folder), ``predict`` (apply an adapted model to more images), ``export`` (``.keras`` file or
SavedModel) and ``info`` (what a checkpoint is). Shared pieces: ``folders`` (reading and
validating image folders), ``checkpoint`` (opening our and the authors' checkpoints, saving
adapted models) and ``segment`` (images of any size -> masks at that size).
"""
