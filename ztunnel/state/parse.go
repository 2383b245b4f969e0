package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
)

// The wire types decode addresses as strings, so that a bad address is
// reported with the item that holds it; each shadows one field of the
// embedded type (encoding/json prefers the shallower field) and lets every
// other field, present or future, decode into the real type.
type (
	wireSnapshot struct {
		Snapshot
		Workloads []json.RawMessage `json:"workloads"`
		Services  []json.RawMessage `json:"services"`
		Policies  []json.RawMessage `json:"policies"`
	}
	wireWorkload struct {
		Workload
		IPs []string `json:"ips"`
	}
	wireService struct {
		Service
		VIPs      []string          `json:"vips"`
		Endpoints []json.RawMessage `json:"endpoints"`
	}
	wireEndpoint struct {
		Endpoint
		Address string `json:"address"`
	}
)

// Parse decodes a JSON snapshot, validates it (see Validate) and indexes it.
// Members it does not know are ignored, so an older proxy reads a newer
// operator's snapshots. Errors name the offending item, e.g.
// `workload shop/cart: invalid ip "10.0.0.999": …`.
func Parse(b []byte) (*Snapshot, error) {
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return nil, errors.New("parse snapshot: not a JSON object")
	}
	var w wireSnapshot
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("parse snapshot: %w", decodeError(err))
	}
	// A copy, so that the Snapshot does not keep w's raw JSON alive. Its
	// shadowed slices are still nil.
	s := new(Snapshot)
	*s = w.Snapshot
	if len(w.Workloads) > 0 {
		s.Workloads = make([]Workload, len(w.Workloads))
		for i, raw := range w.Workloads {
			if err := decodeWorkload(raw, &s.Workloads[i]); err != nil {
				return nil, fmt.Errorf("workload %s: %w", rawLabel(i, raw), err)
			}
		}
	}
	if len(w.Services) > 0 {
		s.Services = make([]Service, len(w.Services))
		for i, raw := range w.Services {
			if err := decodeService(raw, &s.Services[i]); err != nil {
				return nil, fmt.Errorf("service %s: %w", rawLabel(i, raw), err)
			}
		}
	}
	if len(w.Policies) > 0 {
		s.Policies = make([]Policy, len(w.Policies))
		for i, raw := range w.Policies {
			if err := json.Unmarshal(raw, &s.Policies[i]); err != nil {
				return nil, fmt.Errorf("policy %s: %w", rawLabel(i, raw), decodeError(err))
			}
		}
	}
	x, err := buildIndex(s)
	if err != nil {
		return nil, err
	}
	s.idx = x
	return s, nil
}

func decodeWorkload(raw json.RawMessage, dst *Workload) error {
	var w wireWorkload
	if err := json.Unmarshal(raw, &w); err != nil {
		return decodeError(err)
	}
	*dst = w.Workload
	ips, err := parseAddrs("ip", w.IPs)
	dst.IPs = ips
	return err
}

func decodeService(raw json.RawMessage, dst *Service) error {
	var w wireService
	if err := json.Unmarshal(raw, &w); err != nil {
		return decodeError(err)
	}
	*dst = w.Service
	vips, err := parseAddrs("vip", w.VIPs)
	if err != nil {
		return err
	}
	dst.VIPs = vips
	dst.Endpoints = nil
	if len(w.Endpoints) > 0 {
		dst.Endpoints = make([]Endpoint, len(w.Endpoints))
		for i, raw := range w.Endpoints {
			var we wireEndpoint
			if err := json.Unmarshal(raw, &we); err != nil {
				return fmt.Errorf("endpoint %d: %w", i, decodeError(err))
			}
			ep := we.Endpoint
			if we.Address != "" {
				a, err := netip.ParseAddr(we.Address)
				if err != nil {
					return fmt.Errorf("endpoint %d: invalid address %q: %w", i, we.Address, err)
				}
				ep.Address = a
			}
			dst.Endpoints[i] = ep
		}
	}
	return nil
}

// parseAddrs parses a list of addresses; an empty string stays the zero
// Addr, for Validate to report as missing.
func parseAddrs(what string, in []string) ([]netip.Addr, error) {
	if in == nil {
		return nil, nil
	}
	out := make([]netip.Addr, len(in))
	for i, s := range in {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("invalid %s %q: %w", what, s, err)
		}
		out[i] = a
	}
	return out, nil
}

// rawLabel names an item that did not decode, from whatever of its
// namespace and name did.
func rawLabel(i int, raw json.RawMessage) string {
	var id struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	}
	_ = json.Unmarshal(raw, &id) // best effort: the fields that decode are enough
	return itemLabel(i, id.Namespace, id.Name)
}

// itemLabel is how errors name an item: namespace/name, or its position
// when it has no name.
func itemLabel(i int, ns, name string) string {
	switch {
	case name == "":
		return fmt.Sprintf("#%d", i)
	case ns == "":
		return name
	default:
		return ns + "/" + name
	}
}

// decodeError rewrites encoding/json's type errors, which name Go types of
// this package, in terms of the JSON document.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return err
	}
	var path []string
	for p := range strings.SplitSeq(te.Field, ".") {
		// Go names of embedded wire types start with a capital; JSON
		// members of this format never do.
		if p != "" && !(p[0] >= 'A' && p[0] <= 'Z') {
			path = append(path, p)
		}
	}
	if len(path) == 0 {
		return fmt.Errorf("JSON %s where %s was expected", te.Value, jsonKind(te.Type))
	}
	return fmt.Errorf("member %q: JSON %s where %s was expected", strings.Join(path, "."), te.Value, jsonKind(te.Type))
}

// jsonKind names what a Go type accepts in JSON.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Uint16:
		return "an integer in 0..65535"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	default:
		return t.String()
	}
}
