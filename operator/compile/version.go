package compile

import (
	"crypto/sha256"
	"encoding/base64"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/weftmesh/weft/api/mesh/v1"
)

// versionBytes is how much of a SHA-256 a version keeps: 128 bits make a
// collision (two contents, one version, which the stream would take for
// "unchanged") negligible across any mesh's lifetime, in 22 characters.
const versionBytes = 16

// hasher computes content versions, reusing one serialization buffer. It
// is not safe for concurrent use; each Compile has its own.
type hasher struct {
	buf []byte
}

// deterministic serialization sorts map entries (Endpoint.ports), so equal
// messages always give equal bytes within one protobuf library version. A
// library upgrade that changed the encoding would change every version
// once: a full resend, never a wrong "unchanged".
var deterministic = proto.MarshalOptions{Deterministic: true}

// version returns the version of r's body: a hash of its deterministic
// serialization. r's name and version must not be set yet (they are not
// part of the content; the name is fixed by the body anyway).
func (h *hasher) version(r *meshv1.Resource) (string, error) {
	b, err := deterministic.MarshalAppend(h.buf[:0], r)
	if err != nil {
		return "", err
	}
	h.buf = b
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:versionBytes]), nil
}

// systemVersion hashes the names and versions of a sorted set, which
// name its content exactly.
func (h *hasher) systemVersion(res []*meshv1.Resource) string {
	b := h.buf[:0]
	for _, r := range res {
		b = append(b, r.Name...)
		b = append(b, 0)
		b = append(b, r.Version...)
		b = append(b, 0)
	}
	h.buf = b
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:versionBytes])
}
