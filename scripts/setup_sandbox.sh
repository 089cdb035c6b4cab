#!/usr/bin/env bash
# What the sandbox for untrusted model code needs from the system (idempotent): bubblewrap, and as root a
# dedicated unprivileged user for the sandboxed code (the kernel does not apply RLIMIT_NPROC to root).
# As root on Debian it installs what is missing; otherwise it says what is missing and goes on, and
# `python -m ab.nn.sandbox` tells whether a sandbox can be had.
set -euo pipefail
user=ab-nn-sandbox
if ! command -v bwrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing bubblewrap from the distribution's packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq bubblewrap >/dev/null
    else
        echo "setup: bubblewrap (bwrap) is missing: untrusted model code cannot be sandboxed until it is installed" >&2
    fi
fi
if [ "$(id -u)" = 0 ] && ! id "$user" >/dev/null 2>&1; then
    echo "setup: creating the system user $user for sandboxed code"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
fi
