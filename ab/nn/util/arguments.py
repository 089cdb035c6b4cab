"""The argument parser every ``python -m ab.nn...`` command uses.

- A bad argument is one line, ``<prog>: error: <what>; <prog> --help lists the arguments``, exit
  status 2: not the usage block first (35 lines for ``ab.nn.train``) that buries the message.
- Long flags are kebab-case (``--save-pth-weights``). A long flag spelled with underscores
  (LEMUR's ``--save_pth_weights``) is an alias: it works as before (LEMUR users' and NN-GPT's command
  lines run unchanged), its kebab form is added when not declared, and help shows the kebab form
  and names the aliases once, at the end.
"""
from __future__ import annotations

import argparse
import textwrap


def kebab(flag: str) -> str:
    """``--save_pth_weights`` -> ``--save-pth-weights``; short flags and kebab ones stay as they are."""
    return "--" + flag[2:].replace("_", "-") if flag.startswith("--") else flag


class _HidesAliases(argparse.HelpFormatter):
    """Leaves the underscore aliases out of each flag's help line (``Parser.epilog`` names them)."""

    def _format_action_invocation(self, action):
        aliases = getattr(action, "lemur_aliases", ())
        if not aliases:
            return super()._format_action_invocation(action)
        shown = [s for s in action.option_strings if s not in aliases]
        return super()._format_action_invocation(_Shown(action, shown))


class _Shown:
    """An action seen through other option strings (for the help line only)."""

    def __init__(self, action, option_strings):
        self._action, self.option_strings = action, option_strings

    def __getattr__(self, name):
        return getattr(self._action, name)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one-line errors and kebab-case flags (module docstring)."""

    def __init__(self, *args, formatter_class=argparse.HelpFormatter, **kwargs):
        if not issubclass(formatter_class, _HidesAliases):
            formatter_class = type(formatter_class.__name__, (_HidesAliases, formatter_class), {})
        super().__init__(*args, formatter_class=formatter_class, **kwargs)
        self._aliases: list[str] = []

    def add_argument(self, *names, **kwargs):
        aliases = [n for n in names if n.startswith("--") and "_" in n]
        if not aliases:
            return super().add_argument(*names, **kwargs)
        if "dest" not in kwargs:
            kwargs["dest"] = aliases[0][2:]  # the attribute LEMUR's code reads (args.save_pth_weights)
        spelled = [n for n in names if n not in aliases]
        spelled += [kebab(a) for a in aliases if kebab(a) not in spelled]
        action = super().add_argument(*spelled, *aliases, **kwargs)
        action.lemur_aliases = tuple(aliases)
        self._aliases += aliases
        return action

    def format_help(self) -> str:
        text = super().format_help()
        if self._aliases:
            text += "\n" + textwrap.fill("LEMUR's spellings are accepted too: " + ", ".join(self._aliases), 100) + "\n"
        return text

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; {self.prog} --help lists the arguments\n")
