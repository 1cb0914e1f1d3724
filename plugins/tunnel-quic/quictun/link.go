package quictun

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Application error codes on connections and streams.
const (
	codeClosed     quic.ApplicationErrorCode = 0 // orderly close
	codeDuplicate  quic.ApplicationErrorCode = 1 // another connection to the same peer won
	codeKeepalive  quic.ApplicationErrorCode = 2 // keepalive timeout
	codeProtocol   quic.ApplicationErrorCode = 3 // peer broke the wire protocol
	codeDisconnect quic.ApplicationErrorCode = 4 // Disconnect was called

	streamNoListener quic.StreamErrorCode = 1 // nobody listens on the channel here
	streamBacklog    quic.StreamErrorCode = 2 // the listener's accept backlog is full
	streamAborted    quic.StreamErrorCode = 3 // the session was closed or its write interrupted
	streamBadFrame   quic.StreamErrorCode = 4 // the peer sent a malformed frame
	streamTooLarge   quic.StreamErrorCode = 5 // the peer sent a message over our size limit
)

// Control operations, carried in the "op" header of control messages.
const (
	opHello    = "hello"    // body: channels the sender listens on, one per line
	opChannels = "channels" // body: the sender's complete channel set, one per line
	opPing     = "ping"     // body: 8-byte opaque stamp
	opPong     = "pong"     // body: the ping's stamp, echoed
	opGoodbye  = "goodbye"  // the sender is closing: read what it sent, then close the link
)

// maxControlFrame bounds control messages (a hello lists every channel).
const maxControlFrame = 1 << 20

// link is one QUIC connection to a peer node.
type link struct {
	node     *Node
	id       string
	peer     string // authenticated node id
	conn     *quic.Conn
	outbound bool
	// dialStamp is the dialler's wall clock when it dialled, so both ends can
	// tell which of two links from the same dialler is newer.
	dialStamp int64
	ctx       context.Context // done when the link is closed
	cancel    context.CancelCauseFunc

	ctrlOut *quic.SendStream
	ctrlIn  *bufio.Reader
	ctrlMu  sync.Mutex // serialises control writes

	// announce asks the announcer to send our current channel set. Sending
	// whole snapshots from one goroutine means peers always end with the
	// latest set, however Listen and Close calls interleave.
	announce chan struct{}

	lastRecv atomic.Int64 // node clock (ns) of the last control message from the peer
	rtt      atomic.Int64 // EWMA of ping round trips, ns; 0 until measured
	readers  atomic.Int32 // session readers still pulling data off this link
	errs     atomic.Uint64
	drops    atomic.Uint64

	mu       sync.Mutex
	channels map[string]bool // channels the peer listens on
	up       bool
}

func (l *link) String() string { return l.id + "(" + l.peer + ")" }

func (l *link) dialler() string {
	if l.outbound {
		return l.node.id()
	}
	return l.peer
}

// close tears the link down with code; the peer sees why.
func (l *link) close(code quic.ApplicationErrorCode, cause error) {
	l.cancel(cause)
	_ = l.conn.CloseWithError(code, cause.Error())
}

func (l *link) isUp() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up && l.ctx.Err() == nil
}

func (l *link) listens(channel string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.channels[channel]
}

func (l *link) channelList() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.channels))
	for c := range l.channels {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

func (l *link) measuredRTT() time.Duration { return time.Duration(l.rtt.Load()) }

// sendControl writes one control message, bounded by the keepalive timeout so
// that a stalled peer cannot block the caller for longer.
func (l *link) sendControl(op string, body []byte) error {
	frame, err := appendFrame(nil, &Message{Header: map[string]string{"op": op}, Body: body}, maxControlFrame)
	if err != nil {
		return err
	}
	l.ctrlMu.Lock()
	defer l.ctrlMu.Unlock()
	_ = l.ctrlOut.SetWriteDeadline(time.Now().Add(l.node.cfg.KeepaliveTimeout))
	if _, err := l.ctrlOut.Write(frame); err != nil {
		l.errs.Add(1)
		// A timed-out write may have left half a frame on the stream, and a
		// control stream stalled for the keepalive timeout is a dead link.
		l.close(codeKeepalive, fmt.Errorf("control stream stalled: %w", err))
		return fmt.Errorf("link %s: control %s: %w", l, op, err)
	}
	return nil
}

// openControl opens our control stream and says hello with our channels.
func (l *link) openControl() error {
	s, err := l.conn.OpenUniStream()
	if err != nil {
		return fmt.Errorf("open control stream: %w", err)
	}
	// Control (pings, announcements) goes ahead of bulk session data, so
	// a saturated link is not mistaken for a dead one.
	s.SetPriority(0, false)
	l.ctrlOut = s
	hello := &Message{
		Header: map[string]string{"op": opHello},
		Body:   []byte(strings.Join(l.node.listenedChannels(), "\n")),
	}
	if l.outbound {
		hello.Header["dialled"] = strconv.FormatInt(l.dialStamp, 10)
	}
	frame, err := appendFrame(preamble{kind: kindControl}.append(nil), hello, maxControlFrame)
	if err != nil {
		return err
	}
	l.ctrlMu.Lock()
	defer l.ctrlMu.Unlock()
	_ = s.SetWriteDeadline(time.Now().Add(l.node.cfg.DialTimeout))
	if _, err := s.Write(frame); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	return nil
}

// acceptControl waits for the peer's control stream and its hello.
func (l *link) acceptControl(ctx context.Context) error {
	s, err := l.conn.AcceptUniStream(ctx)
	if err != nil {
		return fmt.Errorf("waiting for the peer's control stream: %w", err)
	}
	_ = s.SetReadDeadline(time.Now().Add(l.node.cfg.DialTimeout))
	r := bufio.NewReader(s)
	p, err := readPreamble(r)
	if err != nil {
		return err
	}
	if p.kind != kindControl {
		return fmt.Errorf("%w: first unidirectional stream is not a control stream", ErrBadFrame)
	}
	m, err := readFrame(r, maxControlFrame)
	if err != nil {
		return fmt.Errorf("reading hello: %w", err)
	}
	if m.Header["op"] != opHello {
		return fmt.Errorf("%w: expected hello, got %q", ErrBadFrame, m.Header["op"])
	}
	if !l.outbound {
		if l.dialStamp, err = strconv.ParseInt(m.Header["dialled"], 10, 64); err != nil {
			return fmt.Errorf("%w: hello from the dialler has a bad dial stamp: %v", ErrBadFrame, err)
		}
	}
	_ = s.SetReadDeadline(time.Time{})
	if l.channels, err = parseChannels(m.Body); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	l.ctrlIn = r
	l.lastRecv.Store(l.node.now())
	return nil
}

func parseChannels(body []byte) (map[string]bool, error) {
	set := map[string]bool{}
	if len(body) == 0 {
		return set, nil
	}
	for _, ch := range strings.Split(string(body), "\n") {
		if err := ValidateChannel(ch); err != nil {
			return nil, err
		}
		set[ch] = true
	}
	return set, nil
}

// announcer sends our channel set whenever it changes.
func (l *link) announcer() {
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.announce:
			body := []byte(strings.Join(l.node.listenedChannels(), "\n"))
			if err := l.sendControl(opChannels, body); err != nil {
				l.node.log.Debug("channel announcement failed", "link", l.String(), "error", err)
			}
		}
	}
}

// readControl handles the peer's control messages until the link closes.
func (l *link) readControl() {
	for {
		m, err := readFrame(l.ctrlIn, maxControlFrame)
		if err != nil {
			if l.ctx.Err() == nil {
				l.errs.Add(1)
				l.close(codeProtocol, fmt.Errorf("control stream: %w", err))
			}
			return
		}
		l.heard(l.node.now())
		switch op := m.Header["op"]; op {
		case opPing:
			if err := l.sendControl(opPong, m.Body); err != nil {
				l.node.log.Debug("pong failed", "link", l.String(), "error", err)
			}
		case opPong:
			if len(m.Body) == 8 {
				l.observeRTT(time.Duration(l.node.now() - int64(binary.BigEndian.Uint64(m.Body))))
			}
		case opChannels:
			set, err := parseChannels(m.Body)
			if err != nil {
				l.errs.Add(1)
				l.close(codeProtocol, fmt.Errorf("channel announcement: %w", err))
				return
			}
			l.mu.Lock()
			l.channels = set
			l.mu.Unlock()
		case opGoodbye:
			l.node.peerLeaving(l)
		default:
			// Unknown operations come from newer peers; ignoring them keeps
			// the protocol extensible.
			l.node.log.Debug("unknown control operation", "link", l.String(), "op", op)
		}
	}
}

// rttWeight is the weight of a new sample in the RTT average (like TCP's 1/8).
const rttWeight = 0.125

func (l *link) observeRTT(sample time.Duration) {
	if sample <= 0 {
		sample = 1 // a measured link never reads as unmeasured
	}
	for {
		old := l.rtt.Load()
		next := int64(sample)
		if old != 0 {
			next = int64(float64(old)*(1-rttWeight) + float64(sample)*rttWeight)
			if next <= 0 {
				next = 1
			}
		}
		if l.rtt.CompareAndSwap(old, next) {
			return
		}
	}
}

// keepalive pings every interval and closes the link when nothing has been
// heard from the peer for the keepalive timeout.
//
// Besides control messages, any QUIC packet from the peer counts as a sign
// of life, so a link saturated with session data is not mistaken for a dead
// one. Packets are sampled four times per interval and credited to the
// previous sample's time, which keeps detection within the timeout while
// crediting life at most half an interval late.
func (l *link) keepalive() {
	interval, timeout := l.node.cfg.KeepaliveInterval, l.node.cfg.KeepaliveTimeout
	const samplesPerPing = 4
	tick := time.NewTicker(max(interval/samplesPerPing, time.Millisecond))
	defer tick.Stop()
	ticks := 0
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	lastPackets := l.conn.ConnectionStats().PacketsReceived
	prevSample := l.node.now()
	sample := func() {
		now := l.node.now()
		if pk := l.conn.ConnectionStats().PacketsReceived; pk != lastPackets {
			lastPackets = pk
			l.heard(prevSample)
		}
		prevSample = now
	}
	l.sendPing()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-tick.C:
			sample()
			if ticks++; ticks%samplesPerPing == 0 {
				l.sendPing()
			}
		case <-deadline.C:
			sample()
			silent := time.Duration(l.node.now() - l.lastRecv.Load())
			if silent >= timeout {
				l.errs.Add(1)
				l.node.log.Warn("link dead: keepalive timeout", "link", l.String(), "silent", silent.String(), "timeout", timeout.String())
				l.close(codeKeepalive, fmt.Errorf("%w: nothing heard for %s", ErrKeepaliveTimeout, silent))
				return
			}
			deadline.Reset(timeout - silent)
		}
	}
}

// heard records a sign of life at node time t.
func (l *link) heard(t int64) {
	for {
		old := l.lastRecv.Load()
		if t <= old || l.lastRecv.CompareAndSwap(old, t) {
			return
		}
	}
}

func (l *link) sendPing() {
	var stamp [8]byte
	binary.BigEndian.PutUint64(stamp[:], uint64(l.node.now()))
	if err := l.sendControl(opPing, stamp[:]); err != nil && l.ctx.Err() == nil {
		l.node.log.Debug("ping failed", "link", l.String(), "error", err)
	}
}

// ErrKeepaliveTimeout is the cause of a link closed for silence.
var ErrKeepaliveTimeout = errors.New("keepalive timeout")
