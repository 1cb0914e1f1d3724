package sdk

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The frames of the data path; tunnel.proto describes the protocol.
type frameType byte

const (
	frameHello frameType = iota + 1
	frameOpened
	frameListening
	frameError
	frameMessage
	frameEOF
	frameClose
	frameClosed
)

func (t frameType) String() string {
	switch t {
	case frameHello:
		return "hello"
	case frameOpened:
		return "opened"
	case frameListening:
		return "listening"
	case frameError:
		return "error"
	case frameMessage:
		return "message"
	case frameEOF:
		return "eof"
	case frameClose:
		return "close"
	case frameClosed:
		return "closed"
	}
	return fmt.Sprintf("unknown (%d)", byte(t))
}

const (
	// frameHeaderLen is the length prefix and the type byte.
	frameHeaderLen = 5
	// maxControlFrame bounds every frame but a message.
	maxControlFrame = 64 << 10
	// maxMessageFrame bounds a message frame (type, headers and body), the
	// same limit gRPC enforces between the host and its plugins.
	maxMessageFrame = MaxMessageSize
	// readBufferSize is the buffer of every data path reader. Frames
	// larger than it are read straight into their own allocation.
	readBufferSize = 4 << 10
	// coalesceLimit is the largest body copied behind its frame header for
	// one write; a larger one is written from where it is (writev).
	coalesceLimit = 8 << 10
	// maxKeptWriteBuffer is the largest write buffer kept for the next frame.
	maxKeptWriteBuffer = 64 << 10
	// allocStep is how much of a payload is allocated before its bytes
	// arrive: a length prefix alone cannot make the reader allocate more.
	allocStep = 1 << 20
)

var (
	errBadFrame        = errors.New("malformed data path frame")
	errMessageTooLarge = errors.New("message over the data path's limit")
)

// frameConn is one data path connection with its reader and write buffer.
// Reads and writes each want one caller at a time; the owners lock.
type frameConn struct {
	conn net.Conn
	r    *bufio.Reader
	wbuf []byte
	iov  [2][]byte   // the head and body of a large message, for one writev
	vec  net.Buffers // over iov; a field, so that writing it allocates nothing

	// cancelRead and cancelWrite interrupt a blocked read or write when a
	// context ends; each signals its channel once it has.
	cancelRead, cancelWrite       func()
	readCancelled, writeCancelled chan struct{}
}

// aLongTimeAgo is a deadline that has passed, to wake a blocked read or write.
var aLongTimeAgo = time.Unix(1, 0)

func newFrameConn(conn net.Conn) *frameConn {
	fc := &frameConn{
		conn: conn, r: bufio.NewReaderSize(conn, readBufferSize),
		readCancelled: make(chan struct{}, 1), writeCancelled: make(chan struct{}, 1),
	}
	fc.cancelRead = func() {
		fc.conn.SetReadDeadline(aLongTimeAgo)
		fc.readCancelled <- struct{}{}
	}
	fc.cancelWrite = func() {
		fc.conn.SetWriteDeadline(aLongTimeAgo)
		fc.writeCancelled <- struct{}{}
	}
	return fc
}

// readFrame reads the next frame. broken says whether the stream is no
// longer at a frame boundary: an error with broken false consumed nothing.
func (fc *frameConn) readFrame() (t frameType, payload []byte, broken bool, err error) {
	head, err := fc.r.Peek(frameHeaderLen)
	if err != nil {
		if len(head) > 0 && errors.Is(err, io.EOF) {
			return 0, nil, true, fmt.Errorf("%w: cut short in its header", errBadFrame)
		}
		return 0, nil, false, err
	}
	n := int64(binary.BigEndian.Uint32(head)) - 1
	t = frameType(head[4])
	switch {
	case n < 0:
		return 0, nil, true, fmt.Errorf("%w: length 0", errBadFrame)
	case t < frameHello || t > frameClosed:
		return 0, nil, true, fmt.Errorf("%w: unknown type %d", errBadFrame, head[4])
	case t == frameMessage && n+1 > maxMessageFrame:
		return 0, nil, true, fmt.Errorf("%w: a message of %d bytes is over the limit of %d", errBadFrame, n+1, maxMessageFrame)
	case t != frameMessage && n+1 > maxControlFrame:
		return 0, nil, true, fmt.Errorf("%w: a %s frame of %d bytes is over the limit of %d", errBadFrame, t, n+1, maxControlFrame)
	}
	fc.r.Discard(frameHeaderLen)
	payload, err = readPayload(fc.r, int(n))
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: %s frame cut short", errBadFrame, t)
		}
		return 0, nil, true, err
	}
	return t, payload, false, nil
}

// readPayload reads n bytes, allocating them as they arrive.
func readPayload(r io.Reader, n int) ([]byte, error) {
	if n <= allocStep {
		buf := make([]byte, n)
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	buf := make([]byte, 0, allocStep)
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), cap(buf)))
		}
		got, err := io.ReadFull(r, buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+got]
		if err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// readFrameCtx is readFrame that ending ctx interrupts. A read interrupted
// before any of its frame arrived leaves the connection as it was.
func (fc *frameConn) readFrameCtx(ctx context.Context) (frameType, []byte, bool, error) {
	if ctx.Done() == nil {
		return fc.readFrame()
	}
	if err := ctx.Err(); err != nil {
		return 0, nil, false, err
	}
	stop := context.AfterFunc(ctx, fc.cancelRead)
	t, p, broken, err := fc.readFrame()
	if !stop() {
		<-fc.readCancelled
		fc.conn.SetReadDeadline(time.Time{})
		if err != nil && isTimeout(err) {
			err = ctx.Err()
		}
	}
	return t, p, broken, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// write writes a frame whose header and small body are in head, and whose
// large body, if any, is body. Ending ctx interrupts it; broken says
// whether part of the frame was written.
func (fc *frameConn) write(ctx context.Context, head, body []byte) (broken bool, err error) {
	if ctx.Done() != nil {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		stop := context.AfterFunc(ctx, fc.cancelWrite)
		defer func() {
			if !stop() {
				<-fc.writeCancelled
				fc.conn.SetWriteDeadline(time.Time{})
				if err != nil && isTimeout(err) {
					err = ctx.Err()
				}
			}
		}()
	}
	var n int64
	if len(body) == 0 {
		var m int
		m, err = fc.conn.Write(head)
		n = int64(m)
	} else {
		fc.iov = [2][]byte{head, body}
		fc.vec = fc.iov[:]
		n, err = fc.vec.WriteTo(fc.conn)
	}
	if cap(fc.wbuf) > maxKeptWriteBuffer {
		fc.wbuf = nil
	}
	return err != nil && n > 0, err
}

// writeMessage writes m as a message frame.
func (fc *frameConn) writeMessage(ctx context.Context, m *Message) (broken bool, err error) {
	head, body, err := appendMessage(fc.wbuf[:0], m)
	if err != nil {
		return false, err
	}
	fc.wbuf = head
	return fc.write(ctx, head, body)
}

// appendMessage appends m's frame to buf. A body over coalesceLimit is not
// copied: it is returned to be written after the head.
func appendMessage(buf []byte, m *Message) (head, body []byte, err error) {
	size := 1 + uvarintLen(len(m.Header)) + len(m.Body)
	for k, v := range m.Header {
		size += uvarintLen(len(k)) + len(k) + uvarintLen(len(v)) + len(v)
	}
	if size > maxMessageFrame {
		return nil, nil, fmt.Errorf("%w: %d bytes, the limit is %d", errMessageTooLarge, size, maxMessageFrame)
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(size))
	buf = append(buf, byte(frameMessage))
	buf = binary.AppendUvarint(buf, uint64(len(m.Header)))
	for k, v := range m.Header {
		buf = binary.AppendUvarint(buf, uint64(len(k)))
		buf = append(buf, k...)
		buf = binary.AppendUvarint(buf, uint64(len(v)))
		buf = append(buf, v...)
	}
	if len(m.Body) > coalesceLimit {
		return buf, m.Body, nil
	}
	return append(buf, m.Body...), nil, nil
}

func uvarintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}

// decodeMessage parses a message frame's payload. The body shares p.
func decodeMessage(p []byte) (*Message, error) {
	count, k := binary.Uvarint(p)
	if k <= 0 {
		return nil, fmt.Errorf("%w: bad header count", errBadFrame)
	}
	p = p[k:]
	// Every header takes at least two bytes.
	if count > uint64(len(p)/2) {
		return nil, fmt.Errorf("%w: %d headers in %d bytes", errBadFrame, count, len(p))
	}
	m := &Message{}
	if count > 0 {
		m.Header = make(map[string]string, count)
	}
	for range count {
		var key, value string
		var err error
		if key, p, err = cutString(p); err != nil {
			return nil, err
		}
		if value, p, err = cutString(p); err != nil {
			return nil, err
		}
		m.Header[key] = value
	}
	if len(p) > 0 {
		m.Body = p
	}
	return m, nil
}

func cutString(p []byte) (string, []byte, error) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return "", nil, fmt.Errorf("%w: header cut short", errBadFrame)
	}
	end := k + int(n)
	return string(p[k:end]), p[end:], nil
}

// writeControl writes a frame whose payload is m, or none if m is nil.
func (fc *frameConn) writeControl(ctx context.Context, t frameType, m proto.Message) (broken bool, err error) {
	buf := append(fc.wbuf[:0], 0, 0, 0, 0, byte(t))
	if m != nil {
		if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf, m); err != nil {
			return false, err
		}
	}
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	fc.wbuf = buf
	return fc.write(ctx, buf, nil)
}

// errorToPB carries err as the sdk carries errors over gRPC, so that the
// sentinels survive (see toStatus).
func errorToPB(err error) *pb.DataPathError {
	s := status.Convert(toStatus(err))
	return &pb.DataPathError{Code: uint32(s.Code()), Message: s.Message()}
}

func errorFromPB(e *pb.DataPathError) error {
	return fromStatus(status.Error(codes.Code(e.GetCode()), e.GetMessage()))
}

// decodeError parses an error frame's payload.
func decodeError(p []byte) error {
	var e pb.DataPathError
	if err := proto.Unmarshal(p, &e); err != nil {
		return fmt.Errorf("%w: error frame: %v", errBadFrame, err)
	}
	return errorFromPB(&e)
}
