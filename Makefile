# weft — developer entry points. Everything a target needs is installed by
# hack/tools.sh and cached by version under .cache/ (ignored by git).
SHELL := /bin/bash
GO ?= go
export GOFLAGS ?= -buildvcs=false
BIN := $(CURDIR)/bin
STATICCHECK = $(shell source hack/versions.env && echo $(CURDIR)/.cache/bin/staticcheck-$$STATICCHECK_VERSION/staticcheck)
# Packages that start clusters or touch the kernel share one machine: run
# them one package at a time.
ROOT_PKGS = ./tests/...
UNIT_PKGS = $(shell $(GO) list ./... | grep -v '/tests')
GOTEST_FLAGS ?=
CLUSTER ?= weft

.PHONY: all tools build generate verify-generate lint fuzz bench-enroll bench-l4 bench-controlplane test unit e2e demo cluster-up cluster-down cluster-status clean

all: build

tools: ## install apt packages and build the cached tools (etcd, Kubernetes, CoreDNS, helm, CNI plugins, hubble, fortio, code generators)
	bash hack/tools.sh

build: ## build every binary into bin/
	$(GO) build -o $(BIN)/ ./cmd/... ./tests/cmd/...

.PHONY: images
images: ## an OCI image archive per binary in bin/images/, no container daemon, reproducible (VERSION=tag, default the chart's appVersion; SOURCE_DATE_EPOCH)
	$(GO) run ./hack/imagebuild --out $(BIN)/images $(if $(VERSION),--version $(VERSION)) --revision=$$(git rev-parse HEAD 2>/dev/null)

PROTOC_GEN_GO = $(shell source hack/versions.env && echo $(CURDIR)/.cache/bin/protoc-gen-go-$$PROTOC_GEN_GO_VERSION/protoc-gen-go)
PROTOC_GEN_GO_GRPC = $(shell source hack/versions.env && echo $(CURDIR)/.cache/bin/protoc-gen-go-grpc-$$PROTOC_GEN_GO_GRPC_VERSION/protoc-gen-go-grpc)
HELM = $(shell source hack/versions.env && echo $(CURDIR)/.cache/bin/helm-$$HELM_VERSION/helm)
PROTOS = mesh/v1/mesh.proto ca/v1/ca.proto flows/v1/flows.proto
# flows.proto imports Hubble's flow.proto from the cilium module (go.mod pins it).
CILIUM_API = $(shell $(GO) list -m -f '{{.Dir}}' github.com/cilium/cilium)/api/v1

generate: generate-go ## regenerate committed generated code (eBPF objects via bpf2go + clang 14; SMI DeepCopy + CRDs; protobuf)
	BPF2GO_CC=clang-14 BPF2GO_STRIP=llvm-strip-14 $(GO) generate ./bpf/... ./tests/vipbpf/...

# The generators that need no clang: controller-gen (SMI DeepCopy and CRD
# manifests) and protoc with the Go plugins.
generate-go:
	bash hack/codegen.sh
	$(GO) mod download github.com/cilium/cilium
	protoc -I api -I $(CILIUM_API) \
		--plugin=protoc-gen-go=$(PROTOC_GEN_GO) --plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) \
		--go_out=. --go_opt=module=github.com/weftmesh/weft \
		--go-grpc_out=. --go-grpc_opt=module=github.com/weftmesh/weft \
		$(PROTOS)

verify-generate: ## fail if the committed generated code differs from a fresh generate
	@$(MAKE) --no-print-directory generate-go && git diff --exit-code -- api/ install/helm/weft/crds/ && test -z "$$(git status --porcelain api/ install/helm/weft/crds/)" \
		|| { echo "generated API code is stale: run make generate and commit" >&2; exit 1; }
	@if command -v clang-14 >/dev/null; then \
		$(MAKE) --no-print-directory generate && git diff --exit-code -- bpf/ tests/vipbpf/ && test -z "$$(git status --porcelain bpf/ tests/vipbpf/)" \
		|| { echo "generated code is stale: run make generate and commit" >&2; exit 1; }; \
	else echo "clang-14 not installed: skipping the generated-code check"; fi

lint: tools verify-generate ## gofmt, go vet, staticcheck, generated code up to date
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags bench ./tests/bench/
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags bench ./tests/bench/
	$(HELM) lint --strict install/helm/weft

# Parsers of untrusted input, each fuzzed for FUZZTIME (go test runs their
# seed corpora in every plain run too).
FUZZ_TARGETS = ./daemon/flows/filter:FuzzCompileFilter ./internal/hbone:FuzzParseAuthority ./internal/hbone:FuzzServeConn \
	./internal/hbonev2:FuzzParseAuthority ./internal/hbonev2:FuzzServeConn \
	./ztunnel/state:FuzzParse ./internal/pki:FuzzSignCSR ./internal/spiffe:FuzzParseID ./api/inpod/v1:FuzzDecode
FUZZTIME ?= 5s
fuzz: ## run every fuzz target for FUZZTIME (default 5s each)
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} in $${t%%:*} for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}"; \
	done

unit: ## tests that need no root
	$(GO) test $(GOTEST_FLAGS) $(UNIT_PKGS)

e2e: tools build ## end-to-end tests on the local cluster (root)
	WEFT_REQUIRE_PRIVILEGED=1 $(GO) test -p 1 -count=1 -timeout 40m $(GOTEST_FLAGS) $(ROOT_PKGS)

test: tools lint build fuzz ## the whole suite: lint, fuzzing, unit and root/e2e tests
	@if [ "$$(id -u)" != 0 ]; then echo "make test runs the root tests too: run it as root" >&2; exit 1; fi
	WEFT_REQUIRE_PRIVILEGED=1 $(GO) test -p 1 -count=1 -timeout 40m $(GOTEST_FLAGS) ./...

demo: build ## local cluster, the chart, a two-tier app enrolled, allowed/denied traffic, weft observe (see README)
	bash hack/tools.sh cluster
	bash hack/demo.sh

cluster-up: tools build ## start the local cluster in the background (CLUSTER=name NODES=n CNI=bridge|ptp)
	$(BIN)/weft-cluster up --name $(CLUSTER) --nodes $(or $(NODES),2) --cni $(or $(CNI),bridge)

cluster-down: build ## stop the local cluster and remove everything it created
	$(BIN)/weft-cluster down $(CLUSTER)

cluster-status: build ## show clusters, nodes and pods
	$(BIN)/weft-cluster status

bench-enroll: tools build ## label-to-redirect time for 20/200 pods, un-meshed pods' latency with/without weft (root, ~6-9 min)
	WEFT_REQUIRE_PRIVILEGED=1 $(GO) test -tags bench -count=1 -timeout 30m -run TestBenchEnroll -v ./tests/bench/

bench-l4: tools build ## pod-to-pod TCP: direct vs meshed vs a stunnel4 mTLS pair, same-/cross-node, fortio latency + iperf3 throughput, ztunnel CPU/request and RSS (root, ~6 min)
	WEFT_REQUIRE_PRIVILEGED=1 $(GO) test -tags bench -count=1 -timeout 45m -run TestBenchL4 -v ./tests/bench/

bench-controlplane: tools build ## weft-operator with 10,000 pods on 100 simulated nodes: TrafficTarget change and pod add → every node's ACK (p50/p99), operator CPU and RSS (root, ~4 min)
	WEFT_REQUIRE_PRIVILEGED=1 $(GO) test -tags bench -count=1 -timeout 30m -run TestBenchControlPlane -v ./tests/bench/

clean: ## remove build output (the tool cache in .cache/ is kept; rm -rf .cache to drop it)
	rm -rf $(BIN)
