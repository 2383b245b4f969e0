#!/usr/bin/env bash
# tools.sh installs everything weft's build, tests and demo need, and caches the
# binaries it builds by version under .cache/ (ignored by git). It checks before
# it installs, so a warm run takes seconds.
#
#   hack/tools.sh            everything
#   hack/tools.sh apt|k8s|etcd|coredns|helm|cni|go-tools   one part
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"
CACHE="${WEFT_CACHE:-$ROOT/.cache}"
BIN="$CACHE/bin"
mkdir -p "$BIN"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

log() { printf '[tools] %s\n' "$*" >&2; }

# stamp DIR: true when DIR holds a completed build.
built() { [[ -f "$1/.done" ]]; }

apt_packages() {
	# clang/llvm regenerate the committed eBPF objects (make generate, and
	# the CI check that they are reproducible).
	local want=(iproute2 iptables conntrack ipset util-linux procps psmisc curl jq clang llvm libbpf-dev)
	local missing=()
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if ((${#missing[@]})); then
		log "apt: installing ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
}

k8s() {
	local out="$BIN/kubernetes-$KUBERNETES_VERSION"
	built "$out" && return 0
	log "building Kubernetes $KUBERNETES_VERSION (cold: ~5 min on 2 cores)"
	local pkg=k8s.io/component-base/version
	local ld="-s -w -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")"
	ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
	mkdir -p "$out"
	(cd "$ROOT/hack/tools/kubernetes" && go build -trimpath -ldflags "$ld" -o "$out/" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl)
	touch "$out/.done"
}

etcd() {
	local out="$BIN/etcd-$ETCD_VERSION"
	built "$out" && return 0
	log "building etcd $ETCD_VERSION"
	mkdir -p "$out"
	(cd "$ROOT/hack/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
	touch "$out/.done"
}

goinstall() { # name version pkg...
	local name=$1 version=$2
	shift 2
	local out="$BIN/$name-$version"
	built "$out" && return 0
	log "building $name $version"
	mkdir -p "$out"
	for pkg in "$@"; do
		GOBIN="$out" go install -trimpath -ldflags "-s -w" "$pkg@$version"
	done
	touch "$out/.done"
}

coredns() { goinstall coredns "$COREDNS_VERSION" github.com/coredns/coredns; }
helm() { goinstall helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm; }
cni() {
	local p=github.com/containernetworking/plugins/plugins
	goinstall cni "$CNI_PLUGINS_VERSION" $p/main/bridge $p/main/ptp $p/main/loopback $p/ipam/host-local $p/meta/portmap
}
go_tools() { goinstall staticcheck "$STATICCHECK_VERSION" honnef.co/go/tools/cmd/staticcheck; }

all() { apt_packages; etcd; k8s; coredns; helm; cni; go_tools; }

case "${1:-all}" in
all) all ;;
apt) apt_packages ;;
k8s) k8s ;;
etcd) etcd ;;
coredns) coredns ;;
helm) helm ;;
cni) cni ;;
go-tools) go_tools ;;
*) echo "usage: $0 [all|apt|k8s|etcd|coredns|helm|cni|go-tools]" >&2; exit 2 ;;
esac
