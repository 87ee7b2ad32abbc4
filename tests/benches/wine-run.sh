#!/usr/bin/env bash
# Runs the Windows build of `dochash` under Wine: index, query, status, and a `watch` owner with
# a client beside it. Needs MinGW-w64 and Wine (Debian: gcc-mingw-w64-x86-64, wine64).
#
#   tests/benches/wine-run.sh NOTES_DIR MODEL_DIR
#
# The model is given as a folder (no Python with pip runs inside Wine to fetch it).
set -uo pipefail
cd "$(dirname "$0")/../.."
notes="$(cd "$1" && pwd)"
model="$(cd "$2" && pwd)"
target=x86_64-pc-windows-gnu
CARGO_TARGET_DIR=target/cross cargo build --locked --release --target "$target" --bin dochash || exit 1
exe="$PWD/target/cross/$target/release/dochash.exe"
# Wine 8 has no bcryptprimitives.dll, whose ProcessPrng Rust's std calls for randomness; a
# stand-in beside the program answers it from RtlGenRandom (Windows itself has the real one).
if ! ls "$(dirname "$(command -v wine)")"/../lib/*/wine/*/bcryptprimitives.dll >/dev/null 2>&1; then
    shim="$PWD/target/cross/bcryptprimitives.c"
    cat > "$shim" <<'C'
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID, ULONG);
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n; len -= n;
    }
    return TRUE;
}
C
    x86_64-w64-mingw32-gcc -shared -O2 -o "$(dirname "$exe")/bcryptprimitives.dll" "$shim" -ladvapi32 || exit 1
fi
export WINEPREFIX="$PWD/target/wine-prefix" WINEDEBUG=-all
win() { printf 'Z:%s' "${1//\//\\}"; }
home="$PWD/target/wine-home"
rm -rf "$home"
export DOCHASH_HOME="$(win "$home")" NO_COLOR=1
run() {
    echo "\$ dochash $*"
    local t0=$SECONDS
    wine "$exe" "$@"
    echo "(exit $?, $((SECONDS - t0)) s)"
}
wine --version
run --version
run index --model "$(win "$model")" "$(win "$notes")"
run query "how do I read a file line by line" -k 3
run query --json "event loop" -k 1
run status
echo "\$ dochash watch (in the background), then a query beside it"
wine "$exe" watch --no-train > "$PWD/target/wine-watch.log" 2>&1 &
watch=$!
sleep 20
run status
run query "stream backpressure" -k 2
echo "watch said:"
cat "$PWD/target/wine-watch.log"
kill "$watch" 2>/dev/null
wineserver -k 2>/dev/null
