package flows

import (
	"fmt"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// mask is a compiled GetFlows field mask: a tree of the Flow fields to keep.
// A nil *mask keeps everything.
type mask struct {
	// fields are the kept fields of this message; a nil child keeps the
	// whole field.
	fields map[protoreflect.Name]*mask
}

// compileMask compiles fm against flow.Flow. Paths use proto field names
// ("source.pod_name", "IP", "l4"), as fieldmaskpb.New builds them.
func compileMask(fm *fieldmaskpb.FieldMask) (*mask, error) {
	if len(fm.GetPaths()) == 0 {
		return nil, nil
	}
	if !fm.IsValid(&flowpb.Flow{}) {
		return nil, fmt.Errorf("invalid field mask %q: unknown or repeated field in a path", fm.GetPaths())
	}
	fm = proto.Clone(fm).(*fieldmaskpb.FieldMask)
	fm.Normalize() // drops paths covered by a shorter one
	root := &mask{fields: map[protoreflect.Name]*mask{}}
	for _, p := range fm.GetPaths() {
		m := root
		parts := strings.Split(p, ".")
		for i, part := range parts {
			name := protoreflect.Name(part)
			if i == len(parts)-1 {
				m.fields[name] = nil
				break
			}
			child, ok := m.fields[name]
			if !ok {
				child = &mask{fields: map[protoreflect.Name]*mask{}}
				m.fields[name] = child
			}
			m = child
		}
	}
	return root, nil
}

// apply returns a new Flow holding only f's masked fields; it shares
// their values with f, which must not be modified afterwards.
func (m *mask) apply(f *flowpb.Flow) *flowpb.Flow {
	if m == nil {
		return f
	}
	out := &flowpb.Flow{}
	m.copy(out.ProtoReflect(), f.ProtoReflect())
	return out
}

func (m *mask) copy(dst, src protoreflect.Message) {
	fields := src.Descriptor().Fields()
	for name, child := range m.fields {
		fd := fields.ByName(name)
		if fd == nil || !src.Has(fd) {
			continue
		}
		if child == nil {
			dst.Set(fd, src.Get(fd))
			continue
		}
		child.copy(dst.Mutable(fd).Message(), src.Get(fd).Message())
	}
}
