# Shared shell helpers for the pvrs build and test scripts (sourced, not run).

PVRS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PVRS_CACHE=${PVRS_CACHE:-$HOME/.cache/pvrs}
PVRS_BUILD=${PVRS_BUILD:-$PVRS_ROOT/build}
PVRS_LOGS=$PVRS_BUILD/logs
KERNEL_VERSION_DEB=6.12
KERNEL_SRC=${PVRS_KERNEL_SRC:-$PVRS_CACHE/src/linux-source-$KERNEL_VERSION_DEB}
KERNEL_OBJ=$PVRS_CACHE/obj/guest
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$PVRS_CACHE" "$PVRS_LOGS"

say() { printf '[%s] %s\n' "${PVRS_TAG:-pvrs}" "$*"; }
die() { printf '[%s] error: %s\n' "${PVRS_TAG:-pvrs}" "$*" >&2; exit 1; }

# run_step NAME CMD...: runs CMD with its output in $PVRS_LOGS/NAME.log and,
# when it fails, names the step and the log and shows the end of the log.
run_step() {
    local name=$1; shift
    local log=$PVRS_LOGS/$name.log
    local start=$SECONDS
    say "step $name ..."
    if ! "$@" >"$log" 2>&1; then
        printf '[%s] step %s FAILED; log: %s\n' "${PVRS_TAG:-pvrs}" "$name" "$log" >&2
        tail -n 40 "$log" | sed 's/^/    | /' >&2
        exit 1
    fi
    say "step $name done ($((SECONDS - start)) s)"
}

# hash_of FILES...: one hash for the contents of FILES, for change stamps.
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
