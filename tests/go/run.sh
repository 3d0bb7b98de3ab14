#!/usr/bin/env bash
# Go end-to-end tests (franz-go) against the Shardline broker binary.
#
#   bash tests/go/run.sh            # from anywhere
#
# The broker is $SHARDLINE_BIN, or target/debug/shardline of this checkout
# (built with cargo if it is missing and cargo is installed). Each test copies
# nothing into the tree: the binary is copied to a temp dir, data dirs are
# temp dirs. Needs Go >= 1.26; on a bare Debian machine (as root) it installs
# Debian's golang-go and, if that is older, fetches the Go 1.26 toolchain
# module from the Go module proxy.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

want_minor=26
toolchain_version=go1.26.8

go_minor() { go version 2>/dev/null | sed -n 's/^go version go1\.\([0-9]*\).*/\1/p'; }
go_ok() {
	command -v go >/dev/null 2>&1 || return 1
	local m
	m="$(go_minor)"
	[ -n "$m" ] && [ "$m" -ge "$want_minor" ]
}

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
if ! command -v go >/dev/null 2>&1; then
	echo "run.sh: installing Debian's golang-go" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends golang-go ca-certificates >/dev/null
fi
if ! go_ok; then
	# Older Go: fetch the toolchain as the Go module golang.org/toolchain
	# (what `go` itself does with GOTOOLCHAIN=auto) and use it.
	case "$(uname -m)" in
	x86_64) arch=amd64 ;;
	aarch64 | arm64) arch=arm64 ;;
	*) echo "run.sh: unsupported architecture $(uname -m)" >&2; exit 2 ;;
	esac
	mod="golang.org/toolchain@v0.0.1-${toolchain_version}.linux-${arch}"
	echo "run.sh: $(go version) is older than go1.${want_minor}; fetching $mod" >&2
	tmp="$(mktemp -d)"
	(cd "$tmp" && GOFLAGS=-mod=mod GO111MODULE=on GOTOOLCHAIN=local go mod init bootstrap >/dev/null 2>&1 &&
		GOFLAGS=-mod=mod GO111MODULE=on GOTOOLCHAIN=local go mod download "$mod")
	rm -rf "$tmp"
	tcdir="$(go env GOMODCACHE)/${mod}"
	# The module cache does not keep executable bits.
	find "$tcdir/bin" "$tcdir/pkg/tool" -type f -exec chmod a+x {} + 2>/dev/null || true
	export PATH="$tcdir/bin:$PATH"
	export GOROOT="$tcdir"
fi
export GOTOOLCHAIN=local
go_ok || { echo "run.sh: need go1.${want_minor}+, have: $(go version)" >&2; exit 2; }

if [ -z "${SHARDLINE_BIN:-}" ]; then
	export SHARDLINE_BIN="$root/target/debug/shardline"
	if [ ! -x "$SHARDLINE_BIN" ]; then
		if command -v cargo >/dev/null 2>&1; then
			(cd "$root" && cargo build --bin shardline)
		else
			echo "run.sh: $SHARDLINE_BIN is missing and cargo is not installed; set SHARDLINE_BIN" >&2
			exit 2
		fi
	fi
fi

go mod download
exec go test -count=1 -timeout 300s ./... "$@"
