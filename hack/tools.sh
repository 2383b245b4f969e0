#!/usr/bin/env bash
# tools.sh installs everything weft's build, tests and demo need, and caches the
# binaries it builds by version under .cache/ (ignored by git). It checks before
# it installs, so a warm run takes seconds.
#
#   hack/tools.sh            everything
#   hack/tools.sh apt|k8s|etcd|coredns|helm|cni|go-tools|fortio|hubble   one part
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

# Debconf answers for the packages below, so that no install asks anything:
# dumpcap stays root-only (the tests capture as root) and iperf3 is not
# installed as a system daemon.
debconf_answers='wireshark-common wireshark-common/install-setuid boolean false
iperf3 iperf3/start_daemon boolean false'

# Commands the packages must provide; checked after every install.
apt_commands=(ip iptables conntrack ipset nsenter pgrep curl jq clang-14 tshark dumpcap prometheus stunnel4 iperf3 openssl protoc)

apt_packages() {
	# clang/llvm regenerate the committed eBPF objects (make generate, and
	# the CI check that they are reproducible). tshark (and its dumpcap),
	# prometheus, stunnel4, iperf3 and openssl are the real clients and
	# peers of the mesh tests and benchmarks (ARCHITECTURE.md §8, §9).
	# protobuf-compiler (protoc) regenerates the committed api/ protobuf code;
	# libprotobuf-dev brings the well-known types Hubble's flow.proto imports.
	local want=(iproute2 iptables conntrack ipset util-linux procps psmisc curl jq clang llvm libbpf-dev
		tshark prometheus stunnel4 iperf3 openssl protobuf-compiler libprotobuf-dev)
	# One dpkg-query for all of them keeps a warm run fast; a package it
	# does not know at all is not printed, so it counts as missing too.
	local -A installed=()
	local p status missing=()
	while IFS=' ' read -r p status; do
		[[ $status == "install ok installed" ]] && installed[$p]=1
	done < <(dpkg-query -W -f='${Package} ${Status}\n' "${want[@]}" 2>/dev/null || true)
	for p in "${want[@]}"; do
		[[ -n ${installed[$p]:-} ]] || missing+=("$p")
	done
	if ((${#missing[@]})); then
		log "apt: installing ${missing[*]}"
		debconf-set-selections <<<"$debconf_answers"
		apt-get update -qq
		no_service_starts apt_install "${missing[@]}"
		if [[ " ${missing[*]} " == *" prometheus "* ]]; then
			quiet_prometheus
		fi
	fi
	local c
	for c in "${apt_commands[@]}"; do
		command -v "$c" >/dev/null || { log "apt: $c missing after install"; return 1; }
	done
}

apt_install() {
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
}

# no_service_starts CMD...: runs CMD with a policy-rc.d that forbids
# maintainer scripts to start services (invoke-rc.d exit 101), unless the
# machine already has a policy of its own, which is left alone.
no_service_starts() {
	local policy=/usr/sbin/policy-rc.d
	if [[ -e $policy ]]; then
		"$@"
		return
	fi
	# Removed even if this script is interrupted: a policy left behind would
	# stop every later package from starting its service.
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT INT TERM
	printf '#!/bin/sh\n# hack/tools.sh: no service starts during its apt-get install\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	local rc=0
	"$@" || rc=$?
	rm -f "$policy"
	trap - EXIT INT TERM
	return "$rc"
}

# quiet_prometheus stops and disables the system service the Debian
# prometheus package installs (weft's tests only run the binary, on their
# own ports), whatever the init system, and touches no other service.
quiet_prometheus() {
	if [[ -d /run/systemd/system ]]; then
		systemctl disable --now prometheus.service >/dev/null 2>&1 || true
		return 0
	fi
	if [[ -x /etc/init.d/prometheus ]]; then
		if /etc/init.d/prometheus status >/dev/null 2>&1; then
			/etc/init.d/prometheus stop >/dev/null 2>&1 || true
		fi
		update-rc.d prometheus disable >/dev/null 2>&1 || true
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
go_tools() {
	goinstall staticcheck "$STATICCHECK_VERSION" honnef.co/go/tools/cmd/staticcheck
	# Code generators of make generate: protobuf/gRPC stubs and CRD manifests.
	goinstall protoc-gen-go "$PROTOC_GEN_GO_VERSION" google.golang.org/protobuf/cmd/protoc-gen-go
	goinstall protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION" google.golang.org/grpc/cmd/protoc-gen-go-grpc
	goinstall controller-gen "$CONTROLLER_TOOLS_VERSION" sigs.k8s.io/controller-tools/cmd/controller-gen
}
# fortio: the latency client and server of the mesh benchmarks (ARCHITECTURE.md §9).
fortio() { goinstall fortio "$FORTIO_VERSION" fortio.org/fortio; }
# hubble: the real Hubble CLI the e2e tests read weft's flow API with
# (ARCHITECTURE.md §7); hack/hubble.sh builds it from the cilium module.
hubble() { bash "$ROOT/hack/hubble.sh"; }

# cluster: only what the local cluster and the chart need (make demo,
# make cluster-up), so a first demo does not wait for the test-only tools.
cluster() { apt_packages; etcd; k8s; coredns; helm; cni; }
all() { cluster; go_tools; fortio; hubble; }

case "${1:-all}" in
all) all ;;
cluster) cluster ;;
apt) apt_packages ;;
k8s) k8s ;;
etcd) etcd ;;
coredns) coredns ;;
helm) helm ;;
cni) cni ;;
go-tools) go_tools ;;
fortio) fortio ;;
hubble) hubble ;;
*) echo "usage: $0 [all|cluster|apt|k8s|etcd|coredns|helm|cni|go-tools|fortio|hubble]" >&2; exit 2 ;;
esac
