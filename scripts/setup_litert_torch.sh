#!/usr/bin/env bash
# Create .venv-litert-torch, the environment of the second TFLite converter (litert-torch, LEMUR's):
# litert-torch requires torch<2.15, the project pins torch 2.15, so the converter runs in its own
# interpreter (ab.nn.deploy.converters finds it here; $LEMUR_LITERT_TORCH_PYTHON names another).
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/make_venv.sh" .venv-litert-torch requirements/litert-torch.txt \
    -r requirements/litert-torch.txt
