package filter

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// Label selectors follow Hubble's: Kubernetes selector syntax ("app=web",
// "app!=web", "app in (a,b)", "app notin (a,b)", "app", "!app", ANDed with
// commas) over Cilium labels "source:key=value". A selector key may name a
// source ("k8s:app"); without one it matches any source. Unlike Kubernetes,
// values are not restricted to label-value syntax, so a principal label
// "weft:principal=spiffe://cluster.local/ns/a/sa/b" can be selected as is.

type labelOp int

const (
	opExists labelOp = iota
	opNotExists
	opEquals
	opNotEquals
	opIn
	opNotIn
)

type requirement struct {
	source, key string // source "" = any
	op          labelOp
	values      []string
}

// label is a parsed Cilium label.
type label struct{ source, key, value string }

// parseLabel splits "source:key=value"; a label without a source has source
// "unspec", as in Cilium.
func parseLabel(s string) label {
	kv, value, _ := strings.Cut(s, "=")
	source, key, found := strings.Cut(kv, ":")
	if !found {
		return label{source: "unspec", key: kv, value: value}
	}
	return label{source: source, key: key, value: value}
}

// parseSelector parses a selector into requirements that must all hold.
func parseSelector(sel string) ([]requirement, error) {
	var reqs []requirement
	for _, part := range splitTopLevel(sel) {
		part = strings.TrimSpace(part)
		if part == "" {
			if strings.TrimSpace(sel) == "" {
				continue // the empty selector matches everything
			}
			return nil, fmt.Errorf("selector %q: empty requirement", sel)
		}
		r, err := parseRequirement(part)
		if err != nil {
			return nil, fmt.Errorf("selector %q: %w", sel, err)
		}
		reqs = append(reqs, r)
	}
	return reqs, nil
}

// splitTopLevel splits s at commas outside parentheses.
func splitTopLevel(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func parseRequirement(s string) (requirement, error) {
	var r requirement
	setKey := func(k string) error {
		k = strings.TrimSpace(k)
		if k == "" || strings.ContainsAny(k, " \t()=!,") {
			return fmt.Errorf("invalid key %q", k)
		}
		if src, key, found := strings.Cut(k, ":"); found {
			if src == "" || key == "" {
				return fmt.Errorf("invalid key %q", k)
			}
			if src != "any" {
				r.source = src
			}
			k = key
		}
		r.key = k
		return nil
	}
	if open := strings.IndexByte(s, '('); open >= 0 {
		// key in (a, b) / key notin (a, b)
		if !strings.HasSuffix(s, ")") {
			return r, fmt.Errorf("requirement %q: missing ')'", s)
		}
		head := strings.Fields(s[:open])
		if len(head) != 2 {
			return r, fmt.Errorf("requirement %q: want \"key in (values)\"", s)
		}
		switch head[1] {
		case "in":
			r.op = opIn
		case "notin":
			r.op = opNotIn
		default:
			return r, fmt.Errorf("requirement %q: unknown operator %q", s, head[1])
		}
		if err := setKey(head[0]); err != nil {
			return r, err
		}
		inner := s[open+1 : len(s)-1]
		if strings.ContainsAny(inner, "()") {
			return r, fmt.Errorf("requirement %q: nested parentheses", s)
		}
		for _, v := range strings.Split(inner, ",") {
			r.values = append(r.values, strings.TrimSpace(v))
		}
		return r, nil
	}
	if strings.ContainsRune(s, ')') {
		return r, fmt.Errorf("requirement %q: unbalanced ')'", s)
	}
	if i := strings.IndexByte(s, '='); i >= 0 {
		key, value := s[:i], s[i+1:]
		r.op = opEquals
		switch {
		case strings.HasSuffix(key, "!"):
			r.op, key = opNotEquals, strings.TrimSuffix(key, "!")
		case strings.HasPrefix(value, "="):
			value = value[1:]
		}
		if err := setKey(key); err != nil {
			return r, err
		}
		value = strings.TrimSpace(value)
		if strings.ContainsAny(value, " \t") {
			return r, fmt.Errorf("requirement %q: value contains spaces", s)
		}
		r.values = []string{value}
		return r, nil
	}
	if strings.ContainsAny(s, "<>") {
		return r, errors.New("operators < and > are not supported")
	}
	r.op = opExists
	if k, found := strings.CutPrefix(s, "!"); found {
		r.op, s = opNotExists, k
	}
	return r, setKey(s)
}

func (r requirement) matches(labels []label) bool {
	i := slices.IndexFunc(labels, func(l label) bool {
		return l.key == r.key && (r.source == "" || r.source == l.source)
	})
	found := i >= 0
	var value string
	if found {
		value = labels[i].value
	}
	switch r.op {
	case opExists:
		return found
	case opNotExists:
		return !found
	case opEquals:
		return found && value == r.values[0]
	case opNotEquals:
		return !found || value != r.values[0]
	case opIn:
		return found && slices.Contains(r.values, value)
	case opNotIn:
		return !found || !slices.Contains(r.values, value)
	}
	return false
}

// labelMatcher matches when one of the selectors matches the labels.
func labelMatcher(selectors []string, get func(*flowpb.Flow) []string) (matcher, error) {
	var sels [][]requirement
	for _, s := range selectors {
		reqs, err := parseSelector(s)
		if err != nil {
			return nil, err
		}
		sels = append(sels, reqs)
	}
	return func(f *flowpb.Flow) bool {
		raw := get(f)
		labels := make([]label, len(raw))
		for i, l := range raw {
			labels[i] = parseLabel(l)
		}
		return slices.ContainsFunc(sels, func(reqs []requirement) bool {
			for _, r := range reqs {
				if !r.matches(labels) {
					return false
				}
			}
			return true
		})
	}, nil
}
