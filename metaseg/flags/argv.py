"""Parse the original's command lines with absl.

The original used argparse: names spelt with hyphens or underscores (``--meta-iters``,
``--image_size``) and lists as separate words (``--rsd 2 4``). absl knows one spelling per
flag and comma lists (``--rsd=2,4``), so :func:`normalize_argv` rewrites an argument list
into absl's form first. Flagfiles are expanded (with absl's own reader) before normalising,
so their lines may use either spelling and ``--rsd 2 4`` too.
"""

from __future__ import annotations

import difflib
import re
from typing import Dict, List, Optional, Sequence, Tuple

from absl import flags as absl_flags

from metaseg.errors import ConfigError, exit_on_error

# A negative number is a value, not a flag (``--learning-rate -1e-3``, ``--rsd -1``).
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_FLAG = re.compile(r"^(-{1,2})([^=\s]+)(.*)$", re.S)


def _key(name: str) -> str:
    """Spelling-independent key: ``meta-iters`` and ``meta_iters`` both give ``meta_iters``."""
    return name.replace("-", "_")


def spelling_table(flag_values: absl_flags.FlagValues) -> Dict[str, str]:
    """``{spelling-independent key: defined name}``, including booleans' ``no`` forms."""
    table: Dict[str, str] = {}
    for name in flag_values:
        table.setdefault(_key(name), name)
        if flag_values[name].boolean:
            table.setdefault("no" + _key(name), "no" + name)
            table.setdefault("no_" + _key(name), "no" + name)
    return table


def _split_flag(token: str) -> Optional[Tuple[str, str, Optional[str]]]:
    """``(dashes, name, value or None)`` for a flag token, None for anything else.

    A token holding whitespace (``--rsd 2 4``) is a flagfile line: absl passes each line on
    as one argument, so the first word is the name and the rest its value.
    """
    if token in ("-", "--") or _NUMBER.match(token):
        return None
    match = _FLAG.match(token)
    if match is None:
        return None
    dashes, name, tail = match.groups()
    if not tail:
        return dashes, name, None
    if tail.startswith("="):
        return dashes, name, tail[1:]
    return dashes, name, tail.strip()


def _is_list(flag) -> bool:
    return flag is not None and isinstance(flag.parser, absl_flags.ListParser)


def _take_values(args: Sequence[str], i: int) -> Tuple[List[str], int]:
    """The words after a list flag, up to the next flag: ``--rsd 2 4 --l2`` -> ``[2, 4]``."""
    values = []
    while i < len(args) and (not args[i].startswith("-") or _NUMBER.match(args[i])):
        values.append(args[i])
        i += 1
    return values, i


def normalize_argv(argv: Sequence[str],
                   flag_values: absl_flags.FlagValues = absl_flags.FLAGS) -> List[str]:
    """Rewrite ``argv`` (program name first) into the form absl parses.

    - Either spelling becomes the defined name: ``--meta_iters 5`` -> ``--meta-iters 5``,
      ``--no-augment`` -> ``--noaugment``.
    - A list flag's following words are joined: ``--rsd 2 4`` -> ``--rsd=2,4``.
    - Everything else (values, unknown flags, all after ``--``) is left for absl to judge.
    """
    argv = list(argv)
    table = spelling_table(flag_values)
    out, args, i = argv[:1], argv[1:], 0
    while i < len(args):
        token = args[i]
        if token == "--":
            out.extend(args[i:])
            break
        i += 1
        parsed = _split_flag(token)
        if parsed is None:
            out.append(token)
            continue
        dashes, name, value = parsed
        name = name if name in flag_values else table.get(_key(name), name)
        flag = flag_values[name] if name in flag_values else None
        if _is_list(flag):
            if value is None:
                words, i = _take_values(args, i)
                value = ",".join(words) if words else None
            else:
                value = ",".join(value.replace(",", " ").split())
        out.append(dashes + name if value is None else f"{dashes}{name}={value}")
        if value is None and flag is not None and not flag.boolean and i < len(args):
            # absl reads "--name value" itself; pass the value through untouched even if it
            # looks like a flag, exactly as absl will treat it.
            out.append(args[i])
            i += 1
    return out


def suggest(attempt: str, flag_values: absl_flags.FlagValues, limit: int = 3) -> List[str]:
    """Closest defined flags to a misspelt name, compared spelling-independently.

    Suggestions are written in the user's style (hyphens or underscores) where the user
    used only one; either spelling works anyway.
    """
    names = {_key(name): name for name in flag_values}
    hits = difflib.get_close_matches(_key(attempt), list(names), n=limit, cutoff=0.6)
    return ["--" + _in_style(names[hit], attempt) for hit in hits]


def _in_style(name: str, attempt: str) -> str:
    if "-" in attempt and "_" not in attempt:
        return name.replace("_", "-")
    if "_" in attempt and "-" not in attempt:
        return name.replace("-", "_")
    return name


class StrayArgumentError(absl_flags.Error):
    """A word on the command line that is neither a flag nor a flag's value."""


# Words a user means as a boolean value (``--augment False``); absl's switches take none.
_BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "t", "f", "y", "n",
                            "0", "1"})


def _switch_before(normalized: Sequence[str], word: str,
                   flag_values: absl_flags.FlagValues) -> Optional[Tuple[str, str]]:
    """``(as written, defined name)`` of the boolean flag just before ``word``, if any."""
    for before, token in zip(normalized[1:], normalized[2:]):
        if token != word or "=" in before or not before.startswith("-"):
            continue
        written = name = before.lstrip("-")
        if name not in flag_values and name.startswith("no") and name[2:] in flag_values:
            name = name[2:]
        if name in flag_values and flag_values[name].boolean:
            return written, name
    return None


def stray_argument_message(stray: Sequence[str], normalized: Sequence[str],
                           flag_values: absl_flags.FlagValues) -> str:
    """One line for words that are no flag's value, saying how a switch is turned off when
    a word looks like a boolean value (``--augment False`` -> write ``--noaugment``)."""
    head = (f"unexpected argument{'s' if len(stray) > 1 else ''} "
            f"{', '.join(repr(word) for word in stray)}")
    for word in stray:
        switch = _switch_before(normalized, word, flag_values)
        if switch is not None:
            written, name = switch
            return (f"{head}: --{written} is a switch and takes no value ({word!r} is not "
                    f"read); write --{name} to turn it on, --no{name} to turn it off")
    message = f"{head}: every setting is a --flag (see --helpfull)"
    if any(word.lower() in _BOOLEAN_WORDS for word in stray):
        message += ("; switches take no value: write --NAME to turn one on, --noNAME to turn "
                    "it off (e.g. --noaugment)")
    return message


def parse_flags(argv: Sequence[str],
                flag_values: absl_flags.FlagValues = absl_flags.FLAGS) -> List[str]:
    """Expand flagfiles, normalise, and parse ``argv`` into ``flag_values``.

    Returns ``[program name]``: every other word must be a flag or a flag's value (the
    original took no positional arguments), else ``StrayArgumentError``. Raises
    ``absl.flags.Error``; an unknown flag's error suggests the closest names.
    """
    argv = list(argv)
    expanded = argv[:1] + flag_values.read_flags_from_files(argv[1:], force_gnu=False)
    normalized = normalize_argv(expanded, flag_values)
    try:
        rest = flag_values(normalized)
    except absl_flags.UnrecognizedFlagError as e:
        raise absl_flags.UnrecognizedFlagError(
            e.flagname, e.flagvalue, suggestions=suggest(e.flagname, flag_values)) from None
    if len(rest) > 1:
        raise StrayArgumentError(stray_argument_message(rest[1:], normalized, flag_values))
    return rest


@exit_on_error
def parse_flags_or_exit(argv: Sequence[str],
                        flag_values: absl_flags.FlagValues = absl_flags.FLAGS) -> List[str]:
    """:func:`parse_flags`, but a bad flag ends the program: ``error: ...`` on stderr, exit 2.

    Fits ``absl.app.run(main, flags_parser=parse_flags_or_exit)``.
    """
    try:
        return parse_flags(argv, flag_values)
    except absl_flags.Error as e:
        raise ConfigError(flag_error_message(e)) from None


def flag_error_message(error: absl_flags.Error) -> str:
    """absl's message, minus the shouting prefix of its flagfile errors."""
    return str(error).replace("ERROR:: ", "")
