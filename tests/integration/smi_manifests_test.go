package integration

// Upstream SMI example manifests, adapted only where upstream leaves
// something out: apiVersion (the SMI documents omit it), and the A/B test's
// route group, which the traffic-split document writes without spec. Each
// applies in the namespace "default", as upstream's do.
//
// Sources: github.com/servicemeshinterface/smi-spec apis/traffic-access
// (TrafficTarget examples), apis/traffic-specs/v1alpha4/traffic-specs.md,
// apis/traffic-split/v1alpha4/traffic-split.md, and Open Service Mesh's
// bookstore demo (the most copied SMI policy).

// upstreamPathSpecific is traffic-access's first example: Prometheus may
// scrape /metrics of service-a.
const upstreamPathSpecific = `
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata:
  name: the-routes
spec:
  matches:
    ports:
    - 8080
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: the-routes
spec:
  matches:
  - name: metrics
    pathRegex: "/metrics"
    methods:
    - GET
  - name: everything
    pathRegex: ".*"
    methods: ["*"]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: path-specific
  namespace: default
spec:
  destination:
    kind: ServiceAccount
    name: service-a
    namespace: default
  rules:
  - kind: TCPRoute
    name: the-routes
  - kind: HTTPRouteGroup
    name: the-routes
    matches:
    - metrics
  sources:
  - kind: ServiceAccount
    name: prometheus
    namespace: default
`

// upstreamL7 is traffic-access's "example implementation for L7": four
// services, access by route and source.
const upstreamL7 = `
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata:
  name: api-service-port
spec:
  matches:
    ports:
    - 8080
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: api-service-routes
spec:
  matches:
  - name: api
    pathRegex: /api
    methods: ["*"]
  - name: metrics
    pathRegex: /metrics
    methods: ["GET"]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: api-service-metrics
  namespace: default
spec:
  destination:
    kind: ServiceAccount
    name: api-service
    namespace: default
  rules:
  - kind: TCPRoute
    name: api-service-port
  - kind: HTTPRouteGroup
    name: api-service-routes
    matches:
    - metrics
  sources:
  - kind: ServiceAccount
    name: prometheus
    namespace: default
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: api-service-api
  namespace: default
spec:
  destination:
    kind: ServiceAccount
    name: api-service
    namespace: default
  rules:
  - kind: TCPRoute
    name: api-service-port
  - kind: HTTPRouteGroup
    name: api-service-routes
    matches:
    - api
  sources:
  - kind: ServiceAccount
    name: website-service
    namespace: default
  - kind: ServiceAccount
    name: payments-service
    namespace: default
`

// upstreamL4 is traffic-access's "example implementation for L4". Its
// UDPRoute rule is valid SMI, so the schema accepts the TrafficTarget
// (weft-operator marks it UnsupportedKind); the UDPRoute object itself is
// left out, weft installs no UDPRoute CRD.
const upstreamL4 = `
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata:
  name: tcp-ports
spec:
  matches:
    ports:
    - 8301
    - 8302
    - 8300
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: protocal-specific
spec:
  destination:
    kind: ServiceAccount
    name: server
    namespace: default
  rules:
  - kind: TCPRoute
    name: tcp-ports
  - kind: UDPRoute
    name: udp-ports
  sources:
  - kind: ServiceAccount
    name: client
    namespace: default
`

// upstreamHeaderFilters is traffic-specs v1alpha4's header filter example
// (two routes, ORed; headers within one ANDed).
const upstreamHeaderFilters = `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: the-routes
  namespace: default
spec:
  matches:
  - name: android-insiders
    headers:
      user-agent: ".*Android.*"
      cookie: "^(.*?;)?(type=insider)(;.*)?$"
  - name: firefox-users
    headers:
      user-agent: ".*Firefox.*"
`

// upstreamIPhone is traffic-specs v1alpha4's path + methods + header route.
const upstreamIPhone = `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: the-routes
spec:
  matches:
  - name: iphone-users
    pathRegex: "/api/.*"
    methods:
    - GET
    - HEAD
    headers:
      user-agent: ".*iPhone.*"
`

// upstreamTCPPorts and upstreamTCPAllPorts are traffic-specs v1alpha4's
// TCPRoute examples.
const upstreamTCPPorts = `
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata:
  name: the-routes
spec:
  matches:
    ports:
    - 3306
    - 6446
`

const upstreamTCPAllPorts = `
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata:
  name: the-routes
spec:
  matches:
    ports: []
`

// upstreamCanary and upstreamABTest are traffic-split v1alpha4's examples;
// the A/B test's route group is the specs document's firefox-users route.
const upstreamCanary = `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata:
  name: canary
spec:
  # The root service that clients use to connect to the destination application.
  service: website
  # Services inside the namespace with their own selectors, endpoints and configuration.
  backends:
  - service: website-v1
    weight: 90
  - service: website-v2
    weight: 10
`

const upstreamABTest = `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata:
  name: ab-test
spec:
  service: website
  matches:
  - kind: HTTPRouteGroup
    name: ab-test
  backends:
  - service: website-v1
    weight: 0
  - service: website-v2
    weight: 100
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: ab-test
spec:
  matches:
  - name: firefox-users
    headers:
      user-agent: ".*Firefox.*"
`

// upstreamRollout is the traffic-split workflow's second step (weights
// 1000:500, a third to the new version).
const upstreamRollout = `
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata:
  name: foobar-rollout
spec:
  service: foobar
  backends:
  - service: foobar-v1
    weight: 1000
  - service: foobar-v2
    weight: 500
`

// osmBookstore is Open Service Mesh's bookstore policy, with its route
// group's headers written as the v1alpha4 map (OSM writes a list of
// one-entry maps; see osmBookstoreListHeaders).
const osmBookstore = `
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: bookbuyer-access-bookstore
  namespace: default
spec:
  destination:
    kind: ServiceAccount
    name: bookstore
    namespace: default
  rules:
  - kind: HTTPRouteGroup
    name: bookstore-service-routes
    matches:
    - buy-a-book
    - books-bought
  sources:
  - kind: ServiceAccount
    name: bookbuyer
    namespace: bookbuyer
---
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: bookstore-service-routes
  namespace: default
spec:
  matches:
  - name: books-bought
    pathRegex: /books-bought
    methods:
    - GET
    headers:
      "user-agent": ".*-http-client/*.*"
      "client-app": "bookbuyer"
  - name: buy-a-book
    pathRegex: ".*a-book.*new"
    methods:
    - GET
  - name: update-books-bought
    pathRegex: /update-books-bought
    methods:
    - POST
`

// osmBookstoreListHeaders is OSM's route group as OSM writes it.
const osmBookstoreListHeaders = `
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata:
  name: bookstore-service-routes
spec:
  matches:
  - name: books-bought
    pathRegex: /books-bought
    methods:
    - GET
    headers:
    - "user-agent": ".*-http-client/*.*"
    - "client-app": "bookbuyer"
`
