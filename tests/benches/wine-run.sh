#!/usr/bin/env bash
# Runs the Windows build of `dochash` under Wine: index, query, status, and a `watch` owner with
# clients beside it (status, query, index through its named pipe; a note saved while it watches).
# Needs MinGW-w64 and Wine (Debian: gcc-mingw-w64-x86-64, wine64).
#
#   [PROFILE=release|dev] tests/benches/wine-run.sh NOTES_DIR MODEL_DIR
#
# The model is given as a folder (no Python with pip runs inside Wine to fetch it). NOTES_DIR is
# copied: the run saves a note into the copy.
set -uo pipefail
cd "$(dirname "$0")/../.."
model="$(cd "$2" && pwd)"
notes="$PWD/target/wine-notes"
rm -rf "$notes" && cp -r "$1" "$notes" && chmod -R u+w "$notes" || exit 1
target=x86_64-pc-windows-gnu
profile="${PROFILE:-release}"
CARGO_TARGET_DIR=target/cross cargo build --locked --profile "$profile" --target "$target" --bin dochash || exit 1
[ "$profile" = dev ] && out=debug || out="$profile"
exe="$PWD/target/cross/$target/$out/dochash.exe"
# The library's socket tests as well (the named pipe, its deadlines), run by Wine too.
tests_exe="$(CARGO_TARGET_DIR=target/cross cargo test --locked --profile "$profile" --target "$target" \
    --lib --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])')" || exit 1
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
    cp "$(dirname "$exe")/bcryptprimitives.dll" "$(dirname "$tests_exe")/"
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
echo "\$ the library's socket tests (named pipe)"
wine "$tests_exe" app::socket
echo "(exit $?)"
run --version
run index --model "$(win "$model")" "$(win "$notes")"
run query "how do I read a file line by line" -k 3
run query --json "event loop" -k 1
run status
echo "\$ dochash watch (in the background), then clients beside it"
wine "$exe" watch --no-train > "$PWD/target/wine-watch.log" 2>&1 &
watch=$!
sleep 20
run status
run query "stream backpressure" -k 2
printf '# Wine note\n\nThe quokka ledger lists every marsupial seen on the island.\n' > "$notes/quokka.md"
echo "(saved quokka.md while the owner watches)"
sleep 15
run query "quokka ledger" -k 1
extra="$PWD/target/wine-notes-extra"
rm -rf "$extra" && mkdir -p "$extra"
printf '# Extra\n\nA folder handed to the running owner by a second process.\n' > "$extra/extra.md"
run index "$(win "$extra")"
sleep 15
run query "folder handed to the running owner" -k 1
run status
echo "watch said:"
cat "$PWD/target/wine-watch.log"
kill "$watch" 2>/dev/null
wineserver -k 2>/dev/null
