package quictun

import (
	"bufio"
	"context"
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
	opGoodbye  = "goodbye"  // the sender is closing: read what it sent, then close the link; body: how many session streams it opened
)

// pingDatagram is a keepalive ping (see Node.keepalive). It goes as a QUIC
// datagram, which flow control does not hold back: a ping on a stream would
// wait behind session data the peer has not read yet, and the peer would
// take a slow reader of its own for a dead link. The peer's QUIC
// acknowledges it; nothing else answers, and nothing reads it: its arrival,
// counted in the connection's stats, is all it says, and QUIC keeps at most
// 128 unread datagrams per connection, dropping later ones, which costs
// less than a goroutine per link to read them.
var pingDatagram = []byte{0}

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
	ctrlIn  *frameReader
	ctrlMu  sync.Mutex // serialises control writes

	// announce asks the announcer to send our current channel set. Sending
	// whole snapshots from one goroutine means peers always end with the
	// latest set, however Listen and Close calls interleave.
	announce chan struct{}
	// pingable says the peer takes QUIC datagrams. Peers that predate
	// datagram pings take none; those that ping with QUIC's own keep-alive
	// keep the link alive for both ends.
	pingable bool
	// pinging is set while a keepalive ping is being handed to QUIC.
	pinging atomic.Bool

	rtt     atomic.Int64 // QUIC's smoothed RTT, ns, as of the last keepalive check; 0 until measured
	minRTT  atomic.Int64 // QUIC's lowest RTT sample, ns; 0 until measured
	readers atomic.Int32 // session readers still pulling data off this link
	// opened counts the session streams we opened on the link, handled
	// those the peer opened that we have given to a listener or refused:
	// a goodbye says how many the peer opened, so we read them all.
	opened, handled atomic.Int64
	errs            atomic.Uint64
	drops           atomic.Uint64

	// Owned by the node's keepalive goroutine once the link is registered.
	packetsSeen uint64 // the connection's received packet count at the last check
	heardAt     int64  // node clock (ns) of the check that last saw the count move

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
	// Announcements go ahead of bulk session data, so a saturated link
	// does not delay what peers learn of our channels.
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
	frames := newFrameReader(r, maxControlFrame)
	m, err := frames.next()
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
	l.ctrlIn = frames
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

// announcer sends our channel set whenever it changes; a control write that
// stalls blocks this link alone.
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

// ping sends a keepalive ping unless the last one is still being handed
// over. QUIC queues a datagram until the connection may send, and makes the
// sender wait while 32 are queued; a goroutine of its own keeps that wait,
// on a dead or congested link, from holding up the keepalive checks of the
// other links.
func (l *link) ping() {
	if !l.pingable || !l.pinging.CompareAndSwap(false, true) {
		return
	}
	l.node.wg.Add(1) // the caller, the keepalive goroutine, holds the node open
	go func() {
		defer l.node.wg.Done()
		defer l.pinging.Store(false)
		if err := l.conn.SendDatagram(pingDatagram); err != nil && l.ctx.Err() == nil {
			l.node.log.Debug("keepalive ping failed", "link", l.String(), "error", err)
		}
	}()
}

// readControl handles the peer's control messages until the link closes.
func (l *link) readControl() {
	for {
		m, err := l.ctrlIn.next()
		if err != nil {
			if l.ctx.Err() == nil {
				l.errs.Add(1)
				l.close(codeProtocol, fmt.Errorf("control stream: %w", err))
			}
			return
		}
		switch op := m.Header["op"]; op {
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
			opened, err := strconv.ParseInt(string(m.Body), 10, 64)
			if err != nil {
				opened = 0 // a peer that does not count: wait for the readers only
			}
			l.node.peerLeaving(l, opened)
		default:
			// Unknown operations come from newer peers; ignoring them keeps
			// the protocol extensible.
			l.node.log.Debug("unknown control operation", "link", l.String(), "op", op)
		}
	}
}

// sampleRTT records QUIC's smoothed and lowest RTT, which it measures from
// the acknowledgements of what this end sends: keepalive pings on the
// accepting end, session data (the host's peer messages among it) on both.
func (l *link) sampleRTT(st quic.ConnectionStats) {
	// A measured link never reads as unmeasured.
	l.rtt.Store(max(int64(st.SmoothedRTT), 1))
	l.minRTT.Store(int64(st.MinRTT)) // 0 without a sample: the host then goes by RTT
}

// ErrKeepaliveTimeout is the cause of a link closed for silence.
var ErrKeepaliveTimeout = errors.New("keepalive timeout")
