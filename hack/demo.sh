#!/usr/bin/env bash
# demo.sh: a 2-node local cluster, weft installed with its Helm chart (the
# operator as CA and control plane), a two-tier app enrolled without a
# restart, an allowed and a denied request, and what `weft observe` saw.
# Run by `make demo` (which has built the tools and bin/ first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/hack/versions.env"
KUBECTL="$ROOT/.cache/bin/kubernetes-$KUBERNETES_VERSION/kubectl"
HELM="$ROOT/.cache/bin/helm-$HELM_VERSION/helm"
WC="$ROOT/bin/weft-cluster"
WEFT="$ROOT/bin/weft"
START=$SECONDS

say() { printf '\n\033[1m== [%3ds] %s\033[0m\n' "$((SECONDS - START))" "$*"; }
get() { "$WC" exec "demo/$1" -- "$ROOT/bin/weft-testapp" get http://backend.demo.svc.cluster.local/ "${@:2}"; }

say "weft check: can this machine run weft's datapath?"
"$WEFT" check

say "starting the local cluster (real etcd + kube-apiserver + controller-manager + scheduler + CoreDNS, 2 netns nodes)"
"$WC" up --name weft
KUBECONFIG="$("$WC" kubeconfig weft)"
export KUBECONFIG
"$KUBECTL" get nodes -o wide

say "deploying the two-tier app: demo/frontend (node0) -> Service demo/backend (2 pods on node1), and demo/client (node0)"
"$KUBECTL" apply -f "$ROOT/hack/demo/app.yaml"
"$KUBECTL" -n demo rollout status deployment/backend --timeout=120s
"$KUBECTL" -n demo wait --for=condition=Ready pod/frontend pod/client --timeout=120s
"$KUBECTL" -n demo get pods -o wide
# kube-proxy programs a new Service about a second after its endpoints are ready.
for _ in $(seq 50); do get frontend --timeout 2s >/dev/null 2>&1 && break; sleep 0.2; done
get frontend --count 3

say "installing weft: helm install weft install/helm/weft (operator, agent + CNI installer, ztunnel)"
RUN="$(basename "$(dirname "$KUBECONFIG")")"
CG2="$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)"
# The emulated nodes share one kernel: each gets its own pin root and the
# programs attach to the cluster's cgroup, not the host's.
"$HELM" upgrade --install weft "$ROOT/install/helm/weft" -n weft-system --create-namespace \
	--set "agent.pinRoot=/sys/fs/bpf/weft-$RUN-\$(NODE_NAME)" --set "agent.cgroupPath=$CG2/weft/$RUN" \
	--wait --timeout 180s
"$KUBECTL" -n weft-system get pods -o wide

say "enrolling namespace demo: kubectl label namespace demo weft.io/mesh=enabled (no pod restarts)"
"$KUBECTL" label namespace demo weft.io/mesh=enabled --overwrite
for _ in $(seq 100); do
	"$WEFT" status >/dev/null 2>&1 && break
	sleep 0.3
done
"$WEFT" status
"$KUBECTL" -n demo get pods   # same pods, RESTARTS 0
get frontend --count 5

say "policy: a TrafficTarget lets only ServiceAccount demo/frontend reach demo/backend"
"$KUBECTL" apply -f "$ROOT/hack/demo/policy.yaml"
for _ in $(seq 50); do
	get client --timeout 1s >/dev/null 2>&1 || break
	sleep 0.2
done
"$KUBECTL" -n demo get traffictargets
echo "-- allowed: demo/frontend (spiffe://cluster.local/ns/demo/sa/frontend)"
get frontend --count 3
echo "-- denied: demo/client (spiffe://cluster.local/ns/demo/sa/default)"
get client --count 1 --timeout 2s || echo "   (refused by the policy, as it should be)"

say "weft observe: the flows every node recorded (source -> destination, identities, verdicts)"
# The agents' flow API authorises a bearer token (TokenReview +
# SubjectAccessReview of nodes/flows): a ServiceAccount bound to the
# chart's weft-flows-reader role.
"$KUBECTL" -n weft-system create serviceaccount flows-reader --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" create clusterrolebinding weft-demo-flows-reader --clusterrole=weft-flows-reader \
	--serviceaccount=weft-system:flows-reader --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
TOKEN_FILE="$(dirname "$KUBECONFIG")/flows-reader.token"
"$KUBECTL" -n weft-system create token flows-reader --duration 24h >"$TOKEN_FILE"
"$WEFT" observe --token-file "$TOKEN_FILE" --namespace demo --last 12
echo
echo "-- only the denied ones:"
"$WEFT" observe --token-file "$TOKEN_FILE" --namespace demo --verdict DROPPED --last 4

say "weft stat: golden signals of the backend, from the node proxies' own metrics"
get frontend --count 20 >/dev/null &
"$WEFT" stat -n weft-system demo/deploy/backend --window 3s || true
wait

say "done in $((SECONDS - START)) s — explore further"
cat <<MSG
  export KUBECONFIG=$KUBECONFIG
  bin/weft observe --token-file $TOKEN_FILE -f                  # follow every node's flows live
  bin/weft observe --token-file $TOKEN_FILE --node node1 -o json
  bin/weft stat demo/deploy/backend                                # connections/s, bytes, refused
  bin/weft status                                                  # operator, agents, ztunnels, certs
  $KUBECTL -n demo get traffictargets
  bin/weft-cluster exec demo/client -- bin/weft-testapp get http://backend.demo/
  $HELM uninstall weft -n weft-system                        # removes weft; pods keep talking, unmeshed
  make cluster-down                                                # tear the whole cluster down
MSG
