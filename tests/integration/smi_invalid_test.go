package integration

// invalidObjects are objects the CRD schemas must reject; want are
// fragments of kubectl apply's error, which must name the field. args are
// extra kubectl apply arguments.
var invalidObjects = map[string]struct {
	manifest string
	want     []string
	args     []string
}{
	"TrafficTarget without destination": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: no-destination}
spec:
  rules: [{kind: TCPRoute, name: ports}]
  sources: [{kind: ServiceAccount, name: client}]
`, []string{`spec.destination: Required value`}, nil},
	"TrafficTarget destination of unknown kind": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: group-destination}
spec:
  destination: {kind: Group, name: admins}
  rules: [{kind: TCPRoute, name: ports}]
  sources: [{kind: ServiceAccount, name: client}]
`, []string{`spec.destination.kind: Unsupported value: "Group"`, `"ServiceAccount"`}, nil},
	"TrafficTarget destination without name": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: nameless-destination}
spec:
  destination: {kind: ServiceAccount}
  rules: [{kind: TCPRoute, name: ports}]
  sources: [{kind: ServiceAccount, name: client}]
`, []string{`spec.destination.name: Required value`}, nil},
	"TrafficTarget destination port out of range": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: big-port}
spec:
  destination: {kind: ServiceAccount, name: server, port: 70000}
  rules: [{kind: TCPRoute, name: ports}]
  sources: [{kind: ServiceAccount, name: client}]
`, []string{`spec.destination.port: Invalid value: 70000`, `less than or equal to 65535`}, nil},
	"TrafficTarget source with a port": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: source-port}
spec:
  destination: {kind: ServiceAccount, name: server}
  rules: [{kind: TCPRoute, name: ports}]
  sources: [{kind: ServiceAccount, name: client, port: 8080}]
`, []string{`spec.sources`, `port applies to the destination only`}, nil},
	"TrafficTarget source of unknown kind": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: group-source}
spec:
  destination: {kind: ServiceAccount, name: server}
  rules: [{kind: TCPRoute, name: ports}]
  sources: [{kind: Group, name: admins}]
`, []string{`spec.sources[0].kind: Unsupported value: "Group"`}, nil},
	"TrafficTarget without sources": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: no-sources}
spec:
  destination: {kind: ServiceAccount, name: server}
  rules: [{kind: TCPRoute, name: ports}]
  sources: []
`, []string{`spec.sources: Invalid value`, `at least 1 items`}, nil},
	"TrafficTarget without rules": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: no-rules}
spec:
  destination: {kind: ServiceAccount, name: server}
  sources: [{kind: ServiceAccount, name: client}]
`, []string{`spec.rules: Required value`}, nil},
	"TrafficTarget rule without name": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: nameless-rule}
spec:
  destination: {kind: ServiceAccount, name: server}
  rules: [{kind: HTTPRouteGroup}]
  sources: [{kind: ServiceAccount, name: client}]
`, []string{`spec.rules[0].name: Required value`}, nil},
	"TrafficTarget rule of a kind SMI does not define": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: typo-kind}
spec:
  destination: {kind: ServiceAccount, name: server}
  rules: [{kind: TCPRoute, name: ports}, {kind: HTTPRoute, name: routes}]
  sources: [{kind: ServiceAccount, name: client}]
`, []string{`spec.rules[1].kind: Unsupported value: "HTTPRoute"`, `"HTTPRouteGroup", "TCPRoute", "UDPRoute"`}, nil},
	"TrafficTarget rule with an empty match": {`
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata: {name: empty-match}
spec:
  destination: {kind: ServiceAccount, name: server}
  rules: [{kind: HTTPRouteGroup, name: routes, matches: [""]}]
  sources: [{kind: ServiceAccount, name: client}]
`, []string{`spec.rules[0].matches[0]: Invalid value`}, nil},

	"HTTPRouteGroup match without name": {`
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: nameless-match}
spec:
  matches: [{pathRegex: /api}]
`, []string{`spec.matches[0].name: Required value`}, nil},
	"HTTPRouteGroup with two matches of one name": {`
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: duplicate-match}
spec:
  matches: [{name: api, pathRegex: /api}, {name: api, pathRegex: /v2}]
`, []string{`spec.matches[1]: Duplicate value`}, nil},
	"HTTPRouteGroup with an unknown method": {`
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: bad-method}
spec:
  matches: [{name: api, methods: [GET, FETCH]}]
`, []string{`spec.matches[0].methods[1]: Unsupported value: "FETCH"`}, nil},
	"HTTPRouteGroup without matches": {`
apiVersion: specs.smi-spec.io/v1alpha4
kind: HTTPRouteGroup
metadata: {name: no-matches}
spec: {}
`, []string{`spec.matches: Required value`}, nil},
	"HTTPRouteGroup with headers as a list (OSM's form)": {osmBookstoreListHeaders,
		[]string{`unknown field "spec.matches[0].headers[0].user-agent"`}, nil},
	// Clients that do not ask for strict field validation (client-go's
	// default) meet the schema's type check instead.
	"HTTPRouteGroup with headers as a list, without strict validation": {osmBookstoreListHeaders,
		[]string{`spec.matches[0].headers: Invalid value: "array"`, `must be of type object`}, []string{"--validate=false"}},

	"TCPRoute with port 0": {`
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: port-zero}
spec:
  matches: {ports: [0]}
`, []string{`spec.matches.ports[0]: Invalid value: 0`, `greater than or equal to 1`}, nil},
	"TCPRoute with a port twice": {`
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: port-twice}
spec:
  matches: {ports: [8080, 8080]}
`, []string{`spec.matches.ports[1]: Duplicate value: 8080`}, nil},
	"TCPRoute without matches": {`
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata: {name: no-match}
spec: {}
`, []string{`spec.matches: Required value`}, nil},

	"TrafficSplit with a negative weight": {`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: negative}
spec:
  service: website
  backends: [{service: website-v1, weight: -1}]
`, []string{`spec.backends[0].weight: Invalid value: -1`, `greater than or equal to 0`}, nil},
	"TrafficSplit with a fractional weight": {`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: fraction}
spec:
  service: website
  backends: [{service: website-v1, weight: 0.5}]
`, []string{`spec.backends[0].weight`, `must be of type int32`}, nil},
	"TrafficSplit with a weight beyond int32": {`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: huge}
spec:
  service: website
  backends: [{service: website-v1, weight: 3000000000}]
`, []string{`spec.backends[0].weight`, `int32`}, nil},
	"TrafficSplit backend without weight": {`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: no-weight}
spec:
  service: website
  backends: [{service: website-v1}]
`, []string{`spec.backends[0].weight: Required value`}, nil},
	"TrafficSplit without service": {`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: no-service}
spec:
  backends: [{service: website-v1, weight: 1}]
`, []string{`spec.service: Required value`}, nil},
	"TrafficSplit without backends": {`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: no-backends}
spec:
  service: website
  backends: []
`, []string{`spec.backends: Invalid value`, `at least 1 items`}, nil},
	"TrafficSplit with a backend twice": {`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: backend-twice}
spec:
  service: website
  backends: [{service: website-v1, weight: 1}, {service: website-v1, weight: 2}]
`, []string{`spec.backends[1]: Duplicate value`}, nil},
	"TrafficSplit match of another kind": {`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: tcp-match}
spec:
  service: website
  matches: [{kind: TCPRoute, name: ports}]
  backends: [{service: website-v1, weight: 1}]
`, []string{`spec.matches[0].kind: Unsupported value: "TCPRoute"`}, nil},
	"TrafficSplit match without name": {`
apiVersion: split.smi-spec.io/v1alpha4
kind: TrafficSplit
metadata: {name: nameless-match}
spec:
  service: website
  matches: [{kind: HTTPRouteGroup}]
  backends: [{service: website-v1, weight: 1}]
`, []string{`spec.matches[0].name: Required value`}, nil},
}
