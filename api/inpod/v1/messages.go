package inpodv1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

const (
	// Version is the protocol version of this package, sent in Hello.
	Version = 1

	// MaxMessageSize is the largest packet, in bytes, either side may send.
	// Larger messages are refused by Encode and, on receipt, by Conn.Recv.
	MaxMessageSize = 64 << 10
)

// Values of the "type" member of each message.
const (
	TypeHello          = "hello"
	TypeAddWorkload    = "addWorkload"
	TypeSnapshotSent   = "snapshotSent"
	TypeRemoveWorkload = "removeWorkload"
	TypeAck            = "ack"
)

var (
	// ErrMalformed is wrapped by every error about a packet that is not a
	// valid message of this version: bad JSON, an unknown or missing type,
	// missing required fields, a wrong number of descriptors.
	ErrMalformed = errors.New("malformed message")
	// ErrTooLarge is wrapped by errors about messages larger than
	// MaxMessageSize.
	ErrTooLarge = errors.New("message too large")
)

// Message is one of Hello, AddWorkload, SnapshotSent, RemoveWorkload and Ack
// (as values, not pointers). The set is closed.
type Message interface {
	// Type returns the message's "type" discriminator.
	Type() string
	validate() error
}

// Workload identifies an enrolled pod.
type Workload struct {
	// UID is the pod's metadata.uid; the key of every operation. Required.
	UID            string `json:"uid"`
	Namespace      string `json:"namespace,omitempty"`
	Name           string `json:"name,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
	Node           string `json:"node,omitempty"`
	// IPs are the pod's addresses (status.podIPs).
	IPs []netip.Addr `json:"ips,omitempty"`
	// NetnsCookie is the pod netns's cookie (SO_NETNS_COOKIE), the key of
	// the eBPF maps; 0 if unknown. A proxy may refuse an AddWorkload whose
	// descriptor's namespace has another cookie.
	NetnsCookie uint64 `json:"netnsCookie,omitempty"`
}

// Hello opens every connection (agent → proxy).
type Hello struct {
	// Version is the protocol version the agent speaks; Version for this
	// package. Required (>= 1).
	Version int `json:"version"`
}

// AddWorkload enrolls a pod (agent → proxy). It carries the pod's netns
// descriptor as SCM_RIGHTS.
type AddWorkload struct {
	Workload Workload `json:"workload"`
}

// SnapshotSent ends the snapshot: every pod enrolled when the connection
// was made has been sent (agent → proxy).
type SnapshotSent struct{}

// RemoveWorkload releases a pod (agent → proxy).
type RemoveWorkload struct {
	// UID is the pod's metadata.uid. Required.
	UID string `json:"uid"`
	// Drain is true when the pod was unenrolled (close its listeners, let
	// established connections finish) and false when it was deleted (close
	// everything of it at once).
	Drain bool `json:"drain,omitempty"`
}

// Ack answers each agent message, in order (proxy → agent).
type Ack struct {
	// Error is empty when the message was applied, else why it was refused.
	Error string `json:"error,omitempty"`
}

// Type implements Message.
func (Hello) Type() string { return TypeHello }

// Type implements Message.
func (AddWorkload) Type() string { return TypeAddWorkload }

// Type implements Message.
func (SnapshotSent) Type() string { return TypeSnapshotSent }

// Type implements Message.
func (RemoveWorkload) Type() string { return TypeRemoveWorkload }

// Type implements Message.
func (Ack) Type() string { return TypeAck }

func (m Hello) validate() error {
	if m.Version < 1 {
		return fmt.Errorf("hello: version %d, want >= 1", m.Version)
	}
	return nil
}

func (m AddWorkload) validate() error {
	if m.Workload.UID == "" {
		return errors.New("addWorkload: empty workload uid")
	}
	for _, ip := range m.Workload.IPs {
		if !ip.IsValid() {
			return fmt.Errorf("addWorkload %s: invalid ip", m.Workload.UID)
		}
	}
	return nil
}

func (SnapshotSent) validate() error { return nil }

func (m RemoveWorkload) validate() error {
	if m.UID == "" {
		return errors.New("removeWorkload: empty uid")
	}
	return nil
}

func (Ack) validate() error { return nil }

// CarriesFD reports whether m travels with a netns descriptor: true for
// AddWorkload, which must carry exactly one, and false for every other
// message, which must carry none.
func CarriesFD(m Message) bool {
	_, ok := m.(AddWorkload)
	return ok
}

// Encode returns the packet for m: its JSON object with the "type" member
// first. It fails for invalid messages and for ones larger than
// MaxMessageSize.
func Encode(m Message) ([]byte, error) {
	if m == nil {
		return nil, errors.New("encode message: nil message")
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("encode message: %w: %w", ErrMalformed, err)
	}
	var v any
	// Embedding the message's own (method-less) type flattens its fields
	// after "type".
	switch m := m.(type) {
	case Hello:
		type plain Hello
		v = struct {
			Type string `json:"type"`
			plain
		}{TypeHello, plain(m)}
	case AddWorkload:
		type plain AddWorkload
		v = struct {
			Type string `json:"type"`
			plain
		}{TypeAddWorkload, plain(m)}
	case SnapshotSent:
		v = struct {
			Type string `json:"type"`
		}{TypeSnapshotSent}
	case RemoveWorkload:
		type plain RemoveWorkload
		v = struct {
			Type string `json:"type"`
			plain
		}{TypeRemoveWorkload, plain(m)}
	case Ack:
		type plain Ack
		v = struct {
			Type string `json:"type"`
			plain
		}{TypeAck, plain(m)}
	default:
		return nil, fmt.Errorf("encode message: unknown message type %T", m)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.Type(), err)
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("encode %s: %w: %d bytes, max %d", m.Type(), ErrTooLarge, len(b), MaxMessageSize)
	}
	return b, nil
}

// Decode parses one packet. Errors wrap ErrMalformed or ErrTooLarge.
func Decode(b []byte) (Message, error) {
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("decode message: %w: %d bytes, max %d", ErrTooLarge, len(b), MaxMessageSize)
	}
	var head struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("decode message: %w: %w", ErrMalformed, err)
	}
	if err := checkMembers(b, messageMembers, map[string][]string{"workload": workloadMembers}); err != nil {
		return nil, fmt.Errorf("decode message: %w: %w", ErrMalformed, err)
	}
	if head.Type == nil {
		return nil, fmt.Errorf("decode message: %w: no type", ErrMalformed)
	}
	var (
		m   Message
		err error
	)
	switch *head.Type {
	case TypeHello:
		m, err = decodeAs[Hello](b)
	case TypeAddWorkload:
		var add AddWorkload
		add, err = decodeAs[AddWorkload](b)
		if len(add.Workload.IPs) == 0 {
			add.Workload.IPs = nil // "ips":[] and no "ips" mean the same
		}
		m = add
	case TypeSnapshotSent:
		m, err = decodeAs[SnapshotSent](b)
	case TypeRemoveWorkload:
		m, err = decodeAs[RemoveWorkload](b)
	case TypeAck:
		m, err = decodeAs[Ack](b)
	default:
		return nil, fmt.Errorf("decode message: %w: unknown type %q", ErrMalformed, *head.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w: %w", *head.Type, ErrMalformed, err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("decode message: %w: %w", ErrMalformed, err)
	}
	return m, nil
}

func decodeAs[T Message](b []byte) (T, error) {
	var m T
	err := json.Unmarshal(b, &m)
	return m, err
}

// Member names of messages and of Workload.
var (
	messageMembers  = []string{"type", "version", "workload", "uid", "drain", "error"}
	workloadMembers = []string{"uid", "namespace", "name", "serviceAccount", "node", "ips", "netnsCookie"}
)

// checkMembers rejects, in the JSON object b (already known to be valid
// JSON) and in its member objects named in nested, duplicate member names and names that
// match a known member only case-insensitively. encoding/json would accept
// both (the last duplicate wins; "Type" fills "type"), while other
// implementations of the protocol would read the packet differently.
func checkMembers(b []byte, known []string, nested map[string][]string) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil // not an object: left to json.Unmarshal
	}
	seen := make(map[string]bool)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		name, _ := t.(string)
		if seen[name] {
			return fmt.Errorf("duplicate member %q", name)
		}
		seen[name] = true
		for _, k := range known {
			if name != k && strings.EqualFold(name, k) {
				return fmt.Errorf("member %q, want %q", name, k)
			}
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		if sub, ok := nested[name]; ok {
			if err := checkMembers(v, sub, nil); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return nil
}
