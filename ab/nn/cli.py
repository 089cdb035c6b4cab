"""``abnn``: one command for the project's tools, beside the ``python -m ab.nn.<tool>`` forms LEMUR users know.

``abnn train -c age-regression`` runs exactly what ``python -m ab.nn.train -c age-regression`` runs: each
subcommand is its module executed as ``__main__`` (as ``python -m`` does), so both forms share one parser
and one behaviour and cannot drift apart.
"""
from __future__ import annotations

import difflib
import runpy
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("ab.nn.train", "run a hyperparameter sweep (LEMUR's python -m ab.nn.train)"),
    "stat": ("ab.nn.stat", "query, check, repair, upgrade, import and copy the statistics database"),
    "report": ("ab.nn.report", "write the comparison report (tables and plots)"),
    "predict": ("ab.nn.predict", "estimate ages from ordinary photos"),
    "deploy": ("ab.nn.deploy", "export a trial to ONNX and TFLite and measure fidelity and latency"),
    "deploy-report": ("ab.nn.deploy.report", "summarise deployed trials"),
    "moe": ("ab.nn.moe", "fit and judge the AgeMoE mixture"),
    "bundle": ("ab.nn.bundle", "write the bundle a mobile app ships"),
    "download": ("ab.nn.dataset.download", "fetch UTKFace into the workspace"),
    "sandbox": ("ab.nn.sandbox", "check that generated model code can be sandboxed here"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: abnn <command> [arguments]   (abnn <command> --help for its arguments)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; one of: {', '.join(COMMANDS)}"
        print(f"abnn: unknown command '{name}'{hint}", file=sys.stderr)
        return 2
    module = COMMANDS[name][0]
    saved = sys.argv
    sys.argv = [f"abnn {name}", *rest]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
