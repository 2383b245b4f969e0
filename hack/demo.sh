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

say "not yet: the mesh"
cat <<'MSG'
weft's mesh components (weft-agent, weft-ztunnel, weft-operator, the Helm chart and
`weft observe`) are not built yet (issues 3-6). This demo shows the foundation they
will run on: a real Kubernetes control plane and netns nodes/pods on this machine.
Traffic above is plain kube-proxy Service load balancing, not meshed.

  export KUBECONFIG=$KUBECONFIG
  make cluster-status     # nodes, pods
  make cluster-down       # remove everything the cluster created
MSG
