package sdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"net"
	"runtime"
	"strings"
	"testing"

	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/protobuf/proto"
)

// readerConn is a net.Conn that reads from r, enough for readFrame.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func frameReader(data []byte) *frameConn {
	return newFrameConn(readerConn{r: bytes.NewReader(data)})
}

func encodeMessage(t testing.TB, m *Message) []byte {
	head, body, err := appendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return append(head, body...)
}

func TestMessageFrameRoundTrip(t *testing.T) {
	for _, m := range []*Message{
		{},
		{Body: []byte("x")},
		{Header: map[string]string{"": "", "k": "v", "grpc-status": "0"}},
		{Header: map[string]string{"big": strings.Repeat("h", 300)}, Body: bytes.Repeat([]byte{7}, coalesceLimit+1)},
	} {
		fc := frameReader(encodeMessage(t, m))
		typ, p, _, err := fc.readFrame()
		if err != nil || typ != frameMessage {
			t.Fatalf("read %+v: type %v, %v", m, typ, err)
		}
		got, err := decodeMessage(p)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got.Header, m.Header) || !bytes.Equal(got.Body, m.Body) {
			t.Fatalf("got %+v, want %+v", got, m)
		}
		if _, _, _, err := fc.readFrame(); !errors.Is(err, io.EOF) {
			t.Fatalf("after the only frame: %v, want io.EOF", err)
		}
	}
}

func frame(t frameType, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
	return append(append(b, byte(t)), payload...)
}

// Every kind of bad input is a clear error, and none leaves the reader
// claiming to be at a frame boundary.
func TestBadFrames(t *testing.T) {
	for _, c := range []struct {
		name, want string
		data       []byte
	}{
		{"zero length", "length 0", []byte{0, 0, 0, 0, byte(frameMessage)}},
		{"unknown type", "unknown type 99", frame(99, nil)},
		{"type zero", "unknown type 0", frame(0, nil)},
		{"header cut", "cut short in its header", []byte{0, 0, 1}},
		{"payload cut", "message frame cut short", frame(frameMessage, []byte{0, 1, 2})[:7]},
		{"control too large", "over the limit", binary.BigEndian.AppendUint32(nil, maxControlFrame+1)},
		{"message too large", "over the limit", binary.BigEndian.AppendUint32(nil, maxMessageFrame+1)},
	} {
		data := c.data
		if len(data) == 4 {
			typ := frameOpened
			if c.name == "message too large" {
				typ = frameMessage
			}
			data = append(data, byte(typ))
		}
		_, _, broken, err := frameReader(data).readFrame()
		if !errors.Is(err, errBadFrame) || !strings.Contains(err.Error(), c.want) || !broken {
			t.Errorf("%s: %v (broken %v), want a malformed frame error saying %q", c.name, err, broken, c.want)
		}
	}
	for _, c := range []struct {
		name string
		p    []byte
	}{
		{"no header count", nil},
		{"more headers than bytes", []byte{5, 0, 0}},
		{"key longer than the frame", []byte{1, 9, 'k', 0}},
		{"value missing", []byte{1, 1, 'k'}},
		{"overlong varint", bytes.Repeat([]byte{0xff}, 11)},
	} {
		if _, err := decodeMessage(c.p); !errors.Is(err, errBadFrame) {
			t.Errorf("%s: %v, want a malformed frame error", c.name, err)
		}
	}
}

// A length prefix alone does not make the reader allocate what it claims.
func TestFrameLengthDoesNotAllocate(t *testing.T) {
	data := frame(frameMessage, make([]byte, 100))
	binary.BigEndian.PutUint32(data, maxMessageFrame) // claims 256 MiB, holds 100 bytes
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, _, err := frameReader(data).readFrame()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, errBadFrame) {
		t.Fatalf("%v, want a malformed frame error", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 4*allocStep {
		t.Fatalf("reading a frame that claims %d bytes allocated %d bytes", maxMessageFrame, got)
	}
}

func TestErrorFrameKeepsSentinels(t *testing.T) {
	p, err := proto.Marshal(errorToPB(errors.Join(errors.New("channel x"), ErrNotFound)))
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeError(p); !errors.Is(got, ErrNotFound) || !strings.Contains(got.Error(), "channel x") {
		t.Fatalf("got %v, want ErrNotFound with the message", got)
	}
}

// FuzzReadFrames feeds arbitrary bytes to everything that parses what a
// data path connection carries: nothing may panic, and every frame read
// is within its limit.
func FuzzReadFrames(f *testing.F) {
	hello, _ := proto.Marshal(&pb.DataPathHello{Token: "t", Request: &pb.DataPathHello_Listen{Listen: "c"}})
	f.Add(frame(frameHello, hello))
	f.Add(encodeMessage(f, &Message{Header: map[string]string{"a": "b"}, Body: []byte("body")}))
	f.Add(append(frame(frameEOF, nil), frame(frameClose, nil)...))
	f.Add(frame(frameError, []byte{8, 5, 18, 1, 'x'}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 5})
	f.Fuzz(func(t *testing.T, data []byte) {
		fc := frameReader(data)
		for {
			typ, p, _, err := fc.readFrame()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, errBadFrame) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if len(p) >= len(data) {
				t.Fatalf("a payload of %d bytes from %d bytes of input", len(p), len(data))
			}
			switch typ {
			case frameMessage:
				decodeMessage(p)
			case frameError:
				decodeError(p)
			case frameHello:
				proto.Unmarshal(p, &pb.DataPathHello{})
			}
		}
	})
}

// FuzzMessageRoundTrip checks that any message reads back as written.
func FuzzMessageRoundTrip(f *testing.F) {
	f.Add("k", "v", []byte("body"))
	f.Add("", "", []byte(nil))
	f.Fuzz(func(t *testing.T, k, v string, body []byte) {
		m := &Message{Header: map[string]string{k: v, "fixed": k}, Body: body}
		typ, p, _, err := frameReader(encodeMessage(t, m)).readFrame()
		if err != nil || typ != frameMessage {
			t.Fatalf("type %v, %v", typ, err)
		}
		got, err := decodeMessage(p)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got.Header, m.Header) || !bytes.Equal(got.Body, m.Body) {
			t.Fatalf("got %+v, want %+v", got, m)
		}
	})
}
