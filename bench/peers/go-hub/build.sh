#!/usr/bin/env bash
# Builds the gorilla/websocket hub peer offline into $1 (default bench/.build/go-hub).
# Debian's golang-go and golang-github-gorilla-websocket-dev provide the toolchain and the library;
# go.mod's replace directive points at the packaged source, so no module proxy is needed.
# Exit code 3 with a one-line reason on stdout means "skip this peer".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../.build/go-hub}"
gorilla=/usr/share/gocode/src/github.com/gorilla/websocket
if ! command -v go >/dev/null || [ ! -d "$gorilla" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && grep -qi debian /etc/os-release 2>/dev/null; then
    echo "installing golang-go and golang-github-gorilla-websocket-dev with apt" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q golang-go golang-github-gorilla-websocket-dev >&2; then
      apt-get update -q >&2
      apt-get install -y -q golang-go golang-github-gorilla-websocket-dev >&2
    fi
  else
    echo "skip: go or gorilla/websocket missing and not root on Debian to apt-get install them"
    exit 3
  fi
fi
mkdir -p "$(dirname "$out")"
if [ -x "$out" ] && [ "$out" -nt "$here/main.go" ] && [ "$out" -nt "$here/go.mod" ]; then
  exit 0
fi
cd "$here"
export GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local
export GOCACHE="${GOCACHE:-$here/../../.build/gocache}" GOPATH="${GOPATH:-$here/../../.build/gopath}"
go build -o "$out" .
