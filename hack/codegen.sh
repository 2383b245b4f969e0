#!/usr/bin/env bash
# codegen.sh regenerates the committed code that controller-gen derives from
# the SMI API types in api/smi/: DeepCopy methods (zz_generated.deepcopy.go
# next to the types) and one CRD manifest per resource in the chart's crds/
# folder, which Helm installs before the templates. The output depends only
# on the sources and the pinned controller-gen (CONTROLLER_TOOLS_VERSION), so
# running it twice changes nothing; CI runs it and fails on any git diff.
#
#   hack/codegen.sh          (make generate runs it)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"
CACHE="${WEFT_CACHE:-$ROOT/.cache}"
CONTROLLER_GEN="$CACHE/bin/controller-gen-$CONTROLLER_TOOLS_VERSION/controller-gen"
CRDS=install/helm/weft/crds

if [[ ! -x $CONTROLLER_GEN ]]; then
	echo "codegen: $CONTROLLER_GEN missing: run hack/tools.sh go-tools" >&2
	exit 1
fi
cd "$ROOT"
# A CRD whose type was removed or renamed must not linger in the chart:
# controller-gen only writes files, so drop the old SMI manifests first.
rm -f "$CRDS"/*.smi-spec.io_*.yaml
"$CONTROLLER_GEN" object paths=./api/smi/...
"$CONTROLLER_GEN" crd:crdVersions=v1 paths=./api/smi/... output:crd:artifacts:config="$CRDS"
