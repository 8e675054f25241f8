"""The ``metaseg`` command: segment your own images with a meta-learned initialisation.

One module per subcommand, each with ``add_parser(subparsers, parents)`` and ``run(args) -> exit
code``: ``adapt`` (fine-tune an initialisation on a support folder, segment a query
folder), ``predict`` (apply an adapted model to more images), ``export`` (``.keras`` file or
SavedModel) and ``info`` (what a checkpoint is). Shared pieces: ``folders`` (reading and
validating image folders) and ``segment`` (images of any size -> masks at that size);
checkpoints of every kind are opened, loaded and saved by ``metaseg.checkpoints``.
"""
