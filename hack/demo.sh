#!/usr/bin/env bash
# demo.sh: the local cluster, a sample app, traffic through a Service.
# Run by `make demo` (which has built the tools and bin/ first).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/hack/versions.env"
KUBECTL="$ROOT/.cache/bin/kubernetes-$KUBERNETES_VERSION/kubectl"
WC="$ROOT/bin/weft-cluster"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting the local cluster (real etcd + kube-apiserver + controller-manager + scheduler, 2 netns nodes)"
"$WC" up --name weft
KUBECONFIG="$("$WC" kubeconfig weft)"
export KUBECONFIG

say "installing the sample app (3 echo pods behind Service demo/echo, one client pod)"
"$KUBECTL" apply -f "$ROOT/hack/demo/app.yaml"
"$KUBECTL" -n demo rollout status deployment/echo --timeout=120s
"$KUBECTL" -n demo wait --for=condition=Ready pod/client --timeout=120s
"$KUBECTL" get nodes -o wide
"$KUBECTL" -n demo get pods,svc,endpointslices -o wide

# kube-proxy programs a new Service about a second after its endpoints are ready.
for _ in $(seq 50); do
	"$WC" exec demo/client -- "$ROOT/bin/weft-testapp" get http://echo.demo.svc.cluster.local/ --timeout 2s >/dev/null 2>&1 && break
	sleep 0.2
done

say "sending 20 requests from demo/client to http://echo.demo.svc.cluster.local/"
"$WC" exec demo/client -- "$ROOT/bin/weft-testapp" get http://echo.demo.svc.cluster.local/ --count 20

say "weft check: can this machine run weft's datapath?"
"$ROOT/bin/weft" check || true

RUN="$(basename "$(dirname "$KUBECONFIG")")"
CG2="$(awk '$9 == "cgroup2" {print $5; exit}' /proc/self/mountinfo)"
PIN_ROOT="/sys/fs/bpf/weft-$RUN-\$(NODE_NAME)"
say "installing weft with helm (the node agent DaemonSet; each emulated node gets its own pin root)"
HELM="$ROOT/.cache/bin/helm-$HELM_VERSION/helm"
"$HELM" upgrade --install weft "$ROOT/install/helm/weft" -n weft-system --create-namespace \
	--set "agent.pinRoot=$PIN_ROOT" --set "agent.cgroupPath=$CG2/weft/$RUN" --wait --timeout 120s
sed "s|PIN_ROOT|$PIN_ROOT|" "$ROOT/hack/demo/recordproxy.yaml" | "$KUBECTL" apply -f -
"$KUBECTL" -n weft-system rollout status daemonset/weft-recordproxy --timeout=60s
"$KUBECTL" -n weft-system get pods -o wide

say "enrolling namespace demo: kubectl label namespace demo weft.io/mesh=enabled (no pod restarts)"
"$KUBECTL" label namespace demo weft.io/mesh=enabled --overwrite
sleep 1
"$WC" exec demo/client -- "$ROOT/bin/weft-testapp" get http://echo.demo.svc.cluster.local/ --count 10
"$KUBECTL" -n demo get pods

say "what the node proxy saw (redirected by eBPF, with each connection's original destination)"
for n in node0 node1; do
	f="/run/weft-cluster/clusters/$RUN/nodes/$n/var/run/weft/records.jsonl"
	[ -f "$f" ] && tail -n 5 "$f" | jq -c '{node: "'$n'", listener, pod: (.namespace + "/" + .podName), peer, origDst}'
done

say "not yet: the rest of the mesh"
cat <<'MSG'
The datapath is real (eBPF redirection in each pod's netns, the agent, the CNI
plugin, the Helm chart), but the node proxy above is a recording stand-in: mTLS
between pods (weft-ztunnel, issue 4), the operator (issue 5) and `weft observe`
(issue 6) are not built yet.

  make cluster-status     # nodes, pods
  make cluster-down       # remove everything the cluster created
MSG
echo "  export KUBECONFIG=$KUBECONFIG"
