"""``metaseg preset``: save a model as a preset folder, and list the shipped presets.

    metaseg preset save SRC DIR [--name NAME] [--description TEXT] [--trained_on TEXT]
    metaseg preset list

``SRC`` is anything ``metaseg adapt --init`` accepts (a meta-training checkpoint folder, a
``metaseg adapt`` output, a TF1 checkpoint, a preset). ``list`` prints one shipped preset per
line: its name (the first column, what ``--init`` and ``--checkpoint`` take), its image
size, and what it was trained on.
"""

from __future__ import annotations

import argparse

HELP = "save a checkpoint as a preset folder (config.json, model.weights.h5, metadata.json), " \
       "or list the presets shipped with metaseg"


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("preset", parents=parents, help=HELP, description=HELP)
    actions = p.add_subparsers(dest="preset_command", metavar="ACTION", required=True,
                               parser_class=type(p))
    save = actions.add_parser("save", parents=parents, help="write SRC as a preset in DIR",
                              description="write SRC as a preset folder DIR")
    save.add_argument("source", metavar="SRC",
                      help="metaseg checkpoint folder, metaseg adapt output, TF1 checkpoint "
                           "or preset")
    save.add_argument("directory", metavar="DIR", help="the preset folder to write")
    save.add_argument("--name", help="the preset's name (default: DIR's last part)")
    save.add_argument("--description", default="", help="what the preset is, in words")
    save.add_argument("--trained_on", default="",
                      help="on what data it was trained, in words (stored in metadata.json)")
    save.add_argument("--overwrite", action="store_true", help="replace a non-empty DIR")
    save.set_defaults(run=run_save)
    listing = actions.add_parser("list", parents=parents, help="the shipped presets",
                                 description="one shipped preset per line, name first")
    listing.set_defaults(run=run_list)


def run_save(args: argparse.Namespace) -> int:
    from metaseg import presets  # pylint: disable=import-outside-toplevel
    preset = presets.save_preset(args.source, args.directory, name=args.name,
                                 description=args.description, trained_on=args.trained_on,
                                 overwrite=args.overwrite)
    if preset.metadata.get("quality_calibration"):
        carried = f"with its mask quality calibration ({presets.QUALITY_FILE})"
    else:
        carried = (f"without a mask quality calibration ({args.source} has no "
                   f"{presets.QUALITY_FILE}: adapt and predict will give uncalibrated "
                   "estimated IoUs)")
    print(f"preset {preset.name} written to {preset.directory}, {carried}", flush=True)
    return 0


def run_list(args: argparse.Namespace) -> int:
    del args
    from metaseg import presets  # pylint: disable=import-outside-toplevel
    for preset in presets.list_presets():
        m = preset.metadata
        print(f"{preset.name}\t{m.get('image_size')} px\t{m.get('architecture')}\ttrained on "
              f"{m.get('trained_on')}", flush=True)
    return 0
