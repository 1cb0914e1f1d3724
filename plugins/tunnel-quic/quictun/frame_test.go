package quictun

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"maps"
	"os"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	msgs := []*Message{
		{},
		{Body: []byte("x")},
		{Header: map[string]string{"a": "1", "": "empty key", "k": ""}, Body: bytes.Repeat([]byte{7}, 100000)},
	}
	var buf []byte
	for _, m := range msgs {
		var err error
		if buf, err = appendFrame(buf, m, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	frames := newFrameReader(bytes.NewReader(buf), 1<<20)
	for i, want := range msgs {
		got, err := frames.next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !maps.Equal(got.Header, want.Header) || !bytes.Equal(got.Body, want.Body) {
			t.Fatalf("message %d: got %v/%d bytes, want %v/%d bytes", i, got.Header, len(got.Body), want.Header, len(want.Body))
		}
	}
	if _, err := frames.next(); err != io.EOF {
		t.Fatalf("at end: want io.EOF, got %v", err)
	}
}

// stutter returns at most one byte per Read and fails every other Read
// with a timeout, as a stream does when a Recv's context ends.
type stutter struct {
	data []byte
	fail bool
}

func (s *stutter) Read(p []byte) (int, error) {
	if s.fail = !s.fail; s.fail {
		return 0, os.ErrDeadlineExceeded
	}
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:1], s.data)
	s.data = s.data[n:]
	return n, nil
}

// TestFrameReaderResumes checks that frames read through interruptions at
// every byte (inside the length and the payload) arrive whole.
func TestFrameReaderResumes(t *testing.T) {
	want := []*Message{{Header: map[string]string{"k": "v"}, Body: []byte("first")}, {Body: []byte("second")}}
	var buf []byte
	for _, m := range want {
		buf, _ = appendFrame(buf, m, 1<<10)
	}
	frames := newFrameReader(&stutter{data: buf}, 1<<10)
	var got []*Message
	interruptions := 0
	for {
		m, err := frames.next()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			interruptions++
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		got = append(got, m)
	}
	if len(got) != len(want) || interruptions < len(buf) {
		t.Fatalf("got %d messages through %d interruptions, want %d through at least %d", len(got), interruptions, len(want), len(buf))
	}
	for i := range want {
		if !maps.Equal(got[i].Header, want[i].Header) || !bytes.Equal(got[i].Body, want[i].Body) {
			t.Fatalf("message %d: got %v %q, want %v %q", i, got[i].Header, got[i].Body, want[i].Header, want[i].Body)
		}
	}
}

func TestFrameLimits(t *testing.T) {
	if _, err := appendFrame(nil, &Message{Body: make([]byte, 2000)}, 1024); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("oversized body: %v", err)
	}
	many := map[string]string{}
	for i := range maxHeaders + 1 {
		many[strings.Repeat("k", i+1)] = ""
	}
	if _, err := appendFrame(nil, &Message{Header: many}, 1<<20); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("too many headers: %v", err)
	}
	big, _ := appendFrame(nil, &Message{Body: make([]byte, 5000)}, 1<<20)
	if _, err := newFrameReader(bytes.NewReader(big), 1024).next(); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("reading oversized frame: %v", err)
	}
	if _, err := newFrameReader(bytes.NewReader(big[:100]), 1<<20).next(); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("truncated frame: %v", err)
	}
	bad := []byte{0, 0, 0, 3, 1, 200, 1} // one header whose key claims 200 bytes
	if _, err := newFrameReader(bytes.NewReader(bad), 1<<20).next(); !errors.Is(err, ErrBadFrame) {
		t.Fatalf("lying key length: %v", err)
	}
}

func TestPreambleRoundTrip(t *testing.T) {
	p := preamble{kind: kindSession, mode: Multicast, channel: "control", sessionID: "n1-7"}
	got, err := readPreamble(bufio.NewReader(bytes.NewReader(p.append(nil))))
	if err != nil || got != p {
		t.Fatalf("got %+v, %v", got, err)
	}
	for _, bad := range [][]byte{{9, 1}, {1, 7}, {1, 1, 9}, {1, 1, 0, 0}, {1, 1, 0, 3, 'a', ' ', 'b', 0}} {
		if _, err := readPreamble(bufio.NewReader(bytes.NewReader(bad))); !errors.Is(err, ErrBadFrame) {
			t.Errorf("preamble %v: want ErrBadFrame, got %v", bad, err)
		}
	}
}

// FuzzReadFrame feeds arbitrary bytes to the frame decoder: it must never
// panic or over-allocate, and whatever it accepts must re-encode to the same
// message.
func FuzzReadFrame(f *testing.F) {
	seed, _ := appendFrame(nil, &Message{Header: map[string]string{"a": "b"}, Body: []byte("hello")}, 1<<16)
	f.Add(seed)
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 2, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		frames := newFrameReader(bytes.NewReader(data), 1<<16)
		for {
			m, err := frames.next()
			if err != nil {
				return
			}
			enc, err := appendFrame(nil, m, 1<<16)
			if err != nil {
				t.Fatalf("decoded message does not re-encode: %v", err)
			}
			back, err := newFrameReader(bytes.NewReader(enc), 1<<16).next()
			if err != nil || !maps.Equal(back.Header, m.Header) || !bytes.Equal(back.Body, m.Body) {
				t.Fatalf("round trip changed the message: %v", err)
			}
		}
	})
}

// FuzzReadPreamble checks the stream preamble decoder the same way.
func FuzzReadPreamble(f *testing.F) {
	f.Add(preamble{kind: kindSession, mode: Unicast, channel: "x", sessionID: "id"}.append(nil))
	f.Add(preamble{kind: kindControl}.append(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := readPreamble(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		back, err := readPreamble(bufio.NewReader(bytes.NewReader(p.append(nil))))
		if err != nil || back != p {
			t.Fatalf("round trip: %+v -> %+v, %v", p, back, err)
		}
	})
}

func TestBetterRTT(t *testing.T) {
	if betterRTT(0, 5) || !betterRTT(5, 0) || !betterRTT(3, 5) || betterRTT(5, 3) || betterRTT(0, 0) {
		t.Fatal("betterRTT: unmeasured must never win, lower measured RTT must")
	}
}
