// Package remote carries gRPC calls between proxies over tunnel sessions,
// one session per call: the calling proxy opens a session to the gateway
// node's proxy, which forwards the call as if a client had made it there.
//
// A call is a sequence of session messages whose "t" header says what each
// is. The caller sends a call frame (method, metadata, deadline), then the
// request bodies, then end (it has sent everything) or cancel. The callee
// answers with a header frame, the response bodies and a trailer frame
// (status and trailer metadata), and closes the session. Bodies pass through
// as they are, split into chunks of at most ChunkSize so that a message of
// any size the proxy accepts fits the tunnel's message limit.
//
// Compared with running HTTP/2 inside a session shared by many calls, this
// sends no window updates, pings or settings, re-frames nothing, and lets
// QUIC streams (one per session) keep a slow call from holding up others.
package remote

import (
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/microhost/microhost/plugins/proxy-rpc/callpb"
	"github.com/microhost/microhost/plugins/proxy-rpc/rawcodec"
	"github.com/microhost/microhost/sdk"
)

// Channel is the tunnel channel proxies forward calls to each other on.
const Channel = "proxy"

// ChunkSize is the largest body a session message carries; larger
// messages are split. It stays well under the tunnel's default message
// limit (4 MiB).
const ChunkSize = 256 << 10

// Header keys and the frame types of the "t" header.
const (
	typeKey = "t"
	// moreKey marks a body chunk that more chunks of the same message follow.
	moreKey = "more"

	frameCall    = "call"
	frameMsg     = "msg"
	frameEnd     = "end"
	frameCancel  = "cancel"
	frameHeader  = "header"
	frameTrailer = "trailer"
)

// errProtocol says that the other proxy sent something this one does not
// understand; the call fails with Internal.
var errProtocol = errors.New("proxy call protocol")

func control(typ string, m proto.Message) (*sdk.Message, error) {
	msg := &sdk.Message{Header: map[string]string{typeKey: typ}}
	if m != nil {
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		msg.Body = b
	}
	return msg, nil
}

func frameType(m *sdk.Message) string { return m.Header[typeKey] }

// sendBody sends frame's bytes as one or more msg frames.
func sendBody(send func(*sdk.Message) error, f *rawcodec.Frame) error {
	bufs := f.Buffers()
	if len(bufs) == 0 {
		return send(&sdk.Message{Header: map[string]string{typeKey: frameMsg}})
	}
	for i, buf := range bufs {
		data := buf.ReadOnlyData()
		for first := true; first || len(data) > 0; first = false {
			n := min(len(data), ChunkSize)
			m := &sdk.Message{Header: map[string]string{typeKey: frameMsg}, Body: data[:n]}
			data = data[n:]
			if len(data) > 0 || i < len(bufs)-1 {
				m.Header[moreKey] = "1"
			}
			if err := send(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// bodyReader assembles msg frames into messages.
type bodyReader struct {
	max     int
	pending []byte
	chunked bool
}

// add takes one msg frame; it returns the whole message once its last
// chunk has arrived.
func (r *bodyReader) add(m *sdk.Message) (*rawcodec.Frame, error) {
	more := m.Header[moreKey] != ""
	if !r.chunked && !more {
		if len(m.Body) > r.max {
			return nil, tooLarge(len(m.Body), r.max)
		}
		return rawcodec.FrameOf(mem.SliceBuffer(m.Body)), nil
	}
	if len(r.pending)+len(m.Body) > r.max {
		return nil, tooLarge(len(r.pending)+len(m.Body), r.max)
	}
	r.pending = append(r.pending, m.Body...)
	r.chunked = more
	if more {
		return nil, nil
	}
	body := r.pending
	r.pending = nil
	return rawcodec.FrameOf(mem.SliceBuffer(body)), nil
}

func tooLarge(size, max int) error {
	return status.Errorf(codes.ResourceExhausted, "proxy: message of at least %d bytes is over max_message_size %d", size, max)
}

func mdToPB(md metadata.MD) []*callpb.Metadata {
	out := make([]*callpb.Metadata, 0, len(md))
	for k, vs := range md {
		values := make([][]byte, len(vs))
		for i, v := range vs {
			values[i] = []byte(v)
		}
		out = append(out, &callpb.Metadata{Key: k, Values: values})
	}
	return out
}

func mdFromPB(in []*callpb.Metadata) metadata.MD {
	md := make(metadata.MD, len(in))
	for _, e := range in {
		for _, v := range e.GetValues() {
			md[e.GetKey()] = append(md[e.GetKey()], string(v))
		}
	}
	return md
}

// unexpected reports a frame that has no place where it arrived.
func unexpected(m *sdk.Message, where string) error {
	return status.Errorf(codes.Internal, "%v: unexpected %s frame %s", errProtocol, strconv.Quote(frameType(m)), where)
}

func decodeErr(what string, err error) error {
	return status.Error(codes.Internal, fmt.Sprintf("%v: malformed %s frame: %v", errProtocol, what, err))
}
