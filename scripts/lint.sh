#!/usr/bin/env bash
# Every static check of the repository, in one place (CI's lint job runs exactly this):
#
#   scripts/lint.sh                 # ruff check, ruff format --check, mypy, actionlint
#   scripts/lint.sh mypy actionlint # only the named checks
#
# Runs every selected check even after one fails, then exits non-zero naming each failed tool.
# actionlint is not packaged in Debian bookworm: the version pinned in hermetic/versions.env
# (ACTIONLINT_VERSION) is built once with `go install` into the harness cache, named with its
# version. When shellcheck is on PATH (Debian package `shellcheck`), actionlint uses it to check
# the `run:` scripts of the workflows too.
#
# Environment: HARNESS_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/incident-harness);
# PYTHON (default python3) is the interpreter whose ruff and mypy are used.
# shellcheck source-path=SCRIPTDIR/..
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
# shellcheck source=hermetic/versions.env
. hermetic/versions.env

python=${PYTHON:-python3}
cache=${HARNESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/incident-harness}
bindir="$cache/bin"

say() { printf 'lint: %s\n' "$*"; }
err() { printf 'lint: error: %s\n' "$1" >&2; [ $# -lt 2 ] || printf 'lint: what to do: %s\n' "$2" >&2; }

# Run a Python tool as a module of $python, so the checks use the project's environment even
# where its scripts directory is not on PATH.
py_tool() {
    local module=$1
    shift
    if ! "$python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)"; then
        err "$module is not installed for $python" "pip install -e '.[dev]'"
        return 1
    fi
    "$python" -m "$module" "$@"
}

# Print the path of the pinned actionlint, building it first when it is not in the cache.
actionlint_binary() {
    local version=${ACTIONLINT_VERSION:?ACTIONLINT_VERSION is missing from hermetic/versions.env}
    local target="$bindir/actionlint-$version"
    if [ -x "$target" ]; then
        printf '%s\n' "$target"
        return 0
    fi
    if ! command -v go >/dev/null 2>&1; then
        err "actionlint $version is not in $bindir and go is not installed to build it" \
            "install Go (https://go.dev/dl/ or actions/setup-go), then run scripts/lint.sh again"
        return 1
    fi
    mkdir -p "$bindir" || return 1
    local build started
    build=$(mktemp -d "$bindir/.actionlint-build.XXXXXX") || return 1
    started=$SECONDS
    say "building actionlint $version with $(go version | cut -d' ' -f3) (once; cached as $target)" >&2
    # Build into a private directory, then rename into place: an interrupted build leaves nothing
    # that passes for the cached binary.
    if ! GOBIN="$build" CGO_ENABLED=0 go install "github.com/rhysd/actionlint/cmd/actionlint@$version" >&2; then
        rm -rf "$build"
        err "go install github.com/rhysd/actionlint/cmd/actionlint@$version failed" \
            "check that the Go module proxy is reachable (go env GOPROXY) and ACTIONLINT_VERSION in hermetic/versions.env exists"
        return 1
    fi
    if ! mv -f "$build/actionlint" "$target"; then
        rm -rf "$build"
        return 1
    fi
    rm -rf "$build"
    say "built actionlint $version in $((SECONDS - started)) s" >&2
    printf '%s\n' "$target"
}

check_ruff() { py_tool ruff check .; }
check_format() { py_tool ruff format --check .; }
check_mypy() { py_tool mypy; } # files and strictness come from [tool.mypy] in pyproject.toml

check_actionlint() {
    local binary
    binary=$(actionlint_binary) || return 1
    local -a workflows=()
    local f
    for f in .github/workflows/*.yml .github/workflows/*.yaml; do
        [ -f "$f" ] && workflows+=("$f")
    done
    if [ ${#workflows[@]} -eq 0 ]; then
        say "no workflow files in .github/workflows; nothing for actionlint to check"
        return 0
    fi
    local -a args=()
    if command -v shellcheck >/dev/null 2>&1; then
        say "actionlint checks run: scripts with $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"
    else
        say "shellcheck not found: run: scripts are not shell-checked (apt-get install shellcheck)"
        args+=(-shellcheck=)
    fi
    "$binary" "${args[@]}" "${workflows[@]}"
}

all=(ruff format mypy actionlint)
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${all[@]}")

failed=()
for check in "${selected[@]}"; do
    case $check in
        ruff) label="ruff check" ;;
        format) label="ruff format --check" ;;
        mypy) label="mypy" ;;
        actionlint) label="actionlint" ;;
        *)
            err "unknown check '$check'" "choose from: ${all[*]}"
            exit 2
            ;;
    esac
    say "== $label"
    if ! "check_$check"; then
        failed+=("$label")
        err "$label failed"
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    err "failed: $(IFS=,; printf '%s' "${failed[*]}" | sed 's/,/, /g')" "fix the findings printed above each failure"
    exit 1
fi
say "all passed: ${selected[*]}"
