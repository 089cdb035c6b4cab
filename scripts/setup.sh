#!/usr/bin/env bash
# Create .venv in the repository root and install the project with the locked versions (idempotent).
# torch from the package registry is a CUDA build that also runs on the CPU; the lock file pins the
# torch/torchvision pair so that pip never mixes builds. First, what the sandbox for untrusted model code
# needs from the system (setup_sandbox.sh).
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/setup_sandbox.sh"
exec bash "$(dirname "${BASH_SOURCE[0]}")/make_venv.sh" .venv "setup.cfg pyproject.toml requirements/constraints.txt" \
    -c requirements/constraints.txt -e ".[dev]"
