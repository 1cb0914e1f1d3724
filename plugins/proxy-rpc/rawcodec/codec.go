// Package rawcodec is a gRPC codec that passes message bodies through as
// raw bytes, so the proxy forwards any method without knowing its types.
// Messages that are protobuf values (the proxy's own services) are
// marshalled as usual.
package rawcodec

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Name is the codec's name; it is used only through ForceServerCodecV2 and
// ForceCodecV2, never registered, so it does not replace the proto codec.
const Name = "proto"

// Frame is one message body. It holds a reference to the received buffers
// until Free.
type Frame struct {
	data mem.BufferSlice
}

// Len is the body's size in bytes.
func (f *Frame) Len() int { return f.data.Len() }

// Free releases the frame's buffers; the frame is empty afterwards.
func (f *Frame) Free() {
	f.data.Free()
	f.data = nil
}

// Codec implements encoding.CodecV2.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Marshal hands gRPC its own reference to a frame's buffers (gRPC frees what
// Marshal returns), so the same frame can be sent again on failover.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *Frame:
		m.data.Ref()
		return m.data, nil
	case proto.Message:
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return nil, fmt.Errorf("rawcodec: cannot marshal %T", v)
}

// Unmarshal keeps a reference to the received buffers instead of copying.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *Frame:
		data.Ref()
		m.data.Free()
		m.data = data
		return nil
	case proto.Message:
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return proto.Unmarshal(buf.ReadOnlyData(), m)
	}
	return fmt.Errorf("rawcodec: cannot unmarshal into %T", v)
}

// Name returns the codec name.
func (Codec) Name() string { return Name }
