package quictun

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Wire format. Every stream starts with a preamble:
//
//	version(1) kind(1) [mode(1) uvarint(len) channel uvarint(len) sessionID]   (session streams)
//
// then carries frames:
//
//	uint32 big-endian payload length | payload
//	payload = uvarint(nHeaders) { uvarint(len) key uvarint(len) value }* body
//
// Lengths are checked against fixed bounds before anything is allocated, so a
// hostile peer cannot make the decoder allocate more than the frame limit.
const (
	wireVersion = 1

	kindControl = 0 // the peer's unidirectional control stream
	kindSession = 1 // a session stream

	maxChannelLen   = 255
	maxSessionIDLen = 64
	maxHeaders      = 64
	maxHeaderKey    = 256
	maxHeaderValue  = 8 << 10
	// maxHeaderBytes bounds the encoded header block of one message.
	maxHeaderBytes = 64 << 10
	frameLenSize   = 4
	// allocStep is how much of a frame is allocated before its bytes arrive.
	allocStep = 4 << 20
)

// Errors the codec returns (wrapped with detail).
var (
	ErrMessageTooLarge = errors.New("message too large")
	ErrBadFrame        = errors.New("malformed frame")
)

// Message is the unit a session carries: headers and an opaque body. It has
// the same layout as sdk.Message, so pointers convert without copying.
type Message struct {
	Header map[string]string
	Body   []byte
}

// encodeHeaders appends the header block of m to dst.
func encodeHeaders(dst []byte, m *Message) ([]byte, error) {
	if len(m.Header) > maxHeaders {
		return dst, fmt.Errorf("%w: %d headers, at most %d allowed", ErrMessageTooLarge, len(m.Header), maxHeaders)
	}
	start := len(dst)
	dst = binary.AppendUvarint(dst, uint64(len(m.Header)))
	for k, v := range m.Header {
		if len(k) > maxHeaderKey || len(v) > maxHeaderValue {
			return dst, fmt.Errorf("%w: header %.40q: key %d bytes (max %d), value %d bytes (max %d)",
				ErrMessageTooLarge, k, len(k), maxHeaderKey, len(v), maxHeaderValue)
		}
		dst = binary.AppendUvarint(dst, uint64(len(k)))
		dst = append(dst, k...)
		dst = binary.AppendUvarint(dst, uint64(len(v)))
		dst = append(dst, v...)
	}
	if len(dst)-start > maxHeaderBytes {
		return dst, fmt.Errorf("%w: headers take %d bytes, at most %d allowed", ErrMessageTooLarge, len(dst)-start, maxHeaderBytes)
	}
	return dst, nil
}

// frameHead encodes the length prefix and header block of m; the body
// follows it on the wire. Keeping the body separate lets large bodies be
// written without a copy.
func frameHead(dst []byte, m *Message, maxSize int) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst, err := encodeHeaders(dst, m)
	if err != nil {
		return nil, err
	}
	size := len(dst) - start - frameLenSize + len(m.Body)
	if size > maxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit is %d", ErrMessageTooLarge, size, maxSize)
	}
	binary.BigEndian.PutUint32(dst[start:start+frameLenSize], uint32(size))
	return dst, nil
}

// appendFrame encodes m as one complete frame.
func appendFrame(dst []byte, m *Message, maxSize int) ([]byte, error) {
	head, err := frameHead(dst, m, maxSize)
	if err != nil {
		return nil, err
	}
	return append(head, m.Body...), nil
}

// frameReader reads frames from a stream. A read cut short by an error
// that leaves the stream usable, such as a deadline, resumes where it
// stopped on the next call.
type frameReader struct {
	r       io.Reader
	maxSize int

	head    [frameLenSize]byte
	headN   int  // bytes of head read so far
	inFrame bool // head is complete: payload is being read
	size    int
	payload []byte
}

func newFrameReader(r io.Reader, maxSize int) *frameReader {
	return &frameReader{r: r, maxSize: maxSize}
}

// next reads one frame. It returns io.EOF only at a clean frame boundary.
func (f *frameReader) next() (*Message, error) {
	if !f.inFrame {
		n, err := io.ReadFull(f.r, f.head[f.headN:])
		f.headN += n
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				if f.headN == 0 {
					return nil, io.EOF
				}
				return nil, fmt.Errorf("%w: stream ended inside a frame length", ErrBadFrame)
			}
			return nil, err
		}
		size := binary.BigEndian.Uint32(f.head[:])
		if uint64(size) > uint64(f.maxSize) {
			return nil, fmt.Errorf("%w: peer sent a %d-byte frame, limit is %d", ErrMessageTooLarge, size, f.maxSize)
		}
		f.inFrame, f.size = true, int(size)
		// Memory follows the data that actually arrives, a step at a time,
		// so a peer cannot make us allocate its claimed size up front.
		f.payload = make([]byte, 0, min(f.size, allocStep))
	}
	for len(f.payload) < f.size {
		step := min(f.size-len(f.payload), allocStep)
		f.payload = slices.Grow(f.payload, step)
		// Reading into the message's own buffer: a buffered reader hands
		// large reads straight to the stream, so a body is copied once.
		n, err := io.ReadFull(f.r, f.payload[len(f.payload):len(f.payload)+step])
		f.payload = f.payload[:len(f.payload)+n]
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: stream ended after %d bytes of a %d-byte frame", ErrBadFrame, len(f.payload), f.size)
			}
			return nil, err
		}
	}
	payload := f.payload
	f.payload, f.headN, f.inFrame = nil, 0, false
	return decodePayload(payload)
}

// decodePayload decodes a frame payload; the message body aliases payload.
func decodePayload(p []byte) (*Message, error) {
	d := decoder{buf: p}
	n := d.uvarint("header count")
	if d.err == nil && n > maxHeaders {
		return nil, fmt.Errorf("%w: %d headers, at most %d allowed", ErrBadFrame, n, maxHeaders)
	}
	m := &Message{}
	if n > 0 {
		m.Header = make(map[string]string, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.str("header key", maxHeaderKey)
		v := d.str("header value", maxHeaderValue)
		if _, dup := m.Header[k]; dup && d.err == nil {
			d.err = fmt.Errorf("%w: duplicate header %.40q", ErrBadFrame, k)
		}
		m.Header[k] = v
	}
	if d.err != nil {
		return nil, d.err
	}
	if d.off > maxHeaderBytes {
		return nil, fmt.Errorf("%w: header block of %d bytes exceeds %d", ErrBadFrame, d.off, maxHeaderBytes)
	}
	if d.off < len(p) {
		m.Body = p[d.off:len(p):len(p)]
	}
	return m, nil
}

type decoder struct {
	buf []byte
	off int
	err error
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf[d.off:])
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad %s varint at offset %d", ErrBadFrame, what, d.off)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) str(what string, limit int) string {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return ""
	}
	if n > uint64(limit) || n > uint64(len(d.buf)-d.off) {
		d.err = fmt.Errorf("%w: %s of %d bytes at offset %d (limit %d, %d bytes left)", ErrBadFrame, what, n, d.off, limit, len(d.buf)-d.off)
		return ""
	}
	s := string(d.buf[d.off : d.off+int(n)])
	d.off += int(n)
	return s
}

// preamble identifies a stream.
type preamble struct {
	kind      byte
	mode      Mode
	channel   string
	sessionID string
}

func (p preamble) append(dst []byte) []byte {
	dst = append(dst, wireVersion, p.kind)
	if p.kind == kindSession {
		dst = append(dst, byte(p.mode))
		dst = binary.AppendUvarint(dst, uint64(len(p.channel)))
		dst = append(dst, p.channel...)
		dst = binary.AppendUvarint(dst, uint64(len(p.sessionID)))
		dst = append(dst, p.sessionID...)
	}
	return dst
}

func readPreamble(r *bufio.Reader) (preamble, error) {
	var p preamble
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return p, fmt.Errorf("%w: reading stream preamble: %v", ErrBadFrame, err)
	}
	if head[0] != wireVersion {
		return p, fmt.Errorf("%w: wire version %d, this node speaks %d", ErrBadFrame, head[0], wireVersion)
	}
	p.kind = head[1]
	switch p.kind {
	case kindControl:
		return p, nil
	case kindSession:
	default:
		return p, fmt.Errorf("%w: unknown stream kind %d", ErrBadFrame, p.kind)
	}
	mode, err := r.ReadByte()
	if err != nil {
		return p, fmt.Errorf("%w: reading session mode: %v", ErrBadFrame, err)
	}
	if Mode(mode) > Broadcast {
		return p, fmt.Errorf("%w: unknown session mode %d", ErrBadFrame, mode)
	}
	p.mode = Mode(mode)
	if p.channel, err = readString(r, "channel", maxChannelLen); err != nil {
		return p, err
	}
	if err := ValidateChannel(p.channel); err != nil {
		return p, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if p.sessionID, err = readString(r, "session id", maxSessionIDLen); err != nil {
		return p, err
	}
	return p, nil
}

func readString(r *bufio.Reader, what string, limit int) (string, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return "", fmt.Errorf("%w: reading %s length: %v", ErrBadFrame, what, err)
	}
	if n > uint64(limit) {
		return "", fmt.Errorf("%w: %s of %d bytes, limit %d", ErrBadFrame, what, n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("%w: reading %s: %v", ErrBadFrame, what, err)
	}
	return string(b), nil
}

// ErrInvalidChannel is returned (wrapped) for an unusable channel name.
var ErrInvalidChannel = errors.New("invalid channel name")

// ValidateChannel checks a channel name: 1–255 bytes of printable ASCII
// without spaces, so that names can be listed one per line.
func ValidateChannel(ch string) error {
	if ch == "" || len(ch) > maxChannelLen {
		return fmt.Errorf("%w %.40q: must be 1 to %d bytes", ErrInvalidChannel, ch, maxChannelLen)
	}
	for i := 0; i < len(ch); i++ {
		if c := ch[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w %.40q: byte %d (0x%02x) is not printable ASCII", ErrInvalidChannel, ch, i, c)
		}
	}
	return nil
}
