#!/bin/sh
# Install the shells that tests/test_completions.py loads the completion files into
# (bash, zsh, fish), using the system package manager.
#
# Non-interactive, quiet and idempotent: shells already on PATH are left alone. Where
# nothing can be installed (not root and no passwordless sudo, no apt-get/dnf/brew),
# it says why on stderr and exits 0: the tests then skip those shells with a stated
# reason instead of failing the whole run.
set -u

missing=""
for shell in bash zsh fish; do
    command -v "$shell" >/dev/null 2>&1 || missing="$missing $shell"
done
if [ -z "$missing" ]; then
    echo "install-test-shells: bash, zsh and fish are already installed" >&2
    exit 0
fi

# Root runs the package manager directly; others only through passwordless sudo
# (sudo -n never prompts, so a CI job can't hang on a password).
if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root="sudo -n"
else
    as_root="none"
fi

if command -v brew >/dev/null 2>&1; then
    # Homebrew refuses to run as root and needs no sudo.
    # shellcheck disable=SC2086
    brew install --quiet $missing >/dev/null || {
        echo "install-test-shells: brew install$missing failed; completion tests for them will be skipped" >&2
        exit 0
    }
elif [ "$as_root" = "none" ]; then
    echo "install-test-shells: not root and no passwordless sudo, so can't install:$missing (the completion tests for them will be skipped)" >&2
    exit 0
elif command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # Update the package lists only when a plain install can't find the packages,
    # so a second run on a prepared machine costs nothing.
    # shellcheck disable=SC2086
    if ! $as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; then
        $as_root apt-get update -qq >/dev/null 2>&1
        # shellcheck disable=SC2086
        $as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
            echo "install-test-shells: apt-get install$missing failed; completion tests for them will be skipped" >&2
            exit 0
        }
    fi
elif command -v dnf >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    $as_root dnf install -y -q $missing >/dev/null || {
        echo "install-test-shells: dnf install$missing failed; completion tests for them will be skipped" >&2
        exit 0
    }
else
    echo "install-test-shells: no supported package manager (apt-get, dnf, brew) to install:$missing (the completion tests for them will be skipped)" >&2
    exit 0
fi

for shell in $missing; do
    if command -v "$shell" >/dev/null 2>&1; then
        echo "install-test-shells: installed $shell" >&2
    else
        echo "install-test-shells: $shell is still missing after the install; its completion test will be skipped" >&2
    fi
done
exit 0
