package sdk

import (
	"context"
	"time"
)

// Tunnel links this node with its peers and carries sessions over named channels.
type Tunnel interface {
	Component
	// Connect keeps a link to address, reconnecting with backoff while it is down.
	Connect(ctx context.Context, address string) error
	// Disconnect stops keeping a link to address and closes it.
	Disconnect(ctx context.Context, address string) error
	// Links lists the current links with their measured metrics.
	Links(ctx context.Context) ([]Link, error)
	// Listen accepts sessions dialled to channel by peers. The listener
	// lives until Close; ctx bounds only the call.
	Listen(ctx context.Context, channel string) (Listener, error)
	// Dial opens a session on channel; the session lives until Close, ctx
	// bounds only the dial. A unicast Dial to a channel no
	// reachable peer listens on fails fast with an error wrapping ErrNotFound.
	Dial(ctx context.Context, channel string, opts DialOptions) (Session, error)
}

// Mode says which links a session reaches.
type Mode int

const (
	// Unicast reaches one link: DialOptions.Node, or the best link whose peer listens.
	Unicast Mode = iota
	// Multicast reaches every link whose peer listens on the channel. The
	// links are worked out at each Send, so a long-lived session also
	// reaches peers that come after the Dial; with none, a Send is a no-op.
	Multicast
	// Broadcast reaches every link, likewise worked out at each Send.
	Broadcast
)

func (m Mode) String() string {
	switch m {
	case Unicast:
		return "unicast"
	case Multicast:
		return "multicast"
	case Broadcast:
		return "broadcast"
	}
	return "unknown"
}

// DialOptions shape a Dial.
type DialOptions struct {
	Mode Mode
	// Node is the peer node id for a unicast session; "" picks the best link.
	Node string
	// Timeout bounds the dial; 0 means the tunnel's default.
	Timeout time.Duration
}

// LinkState is the state of a link.
type LinkState string

const (
	LinkConnecting LinkState = "connecting"
	LinkUp         LinkState = "up"
	LinkDown       LinkState = "down"
)

// Link is a connection to one peer node.
type Link struct {
	ID       string        `json:"id"`
	Peer     string        `json:"peer"`    // node id, from the peer's certificate
	Address  string        `json:"address"` // remote UDP address
	Outbound bool          `json:"outbound"`
	State    LinkState     `json:"state"`
	RTT      time.Duration `json:"rtt"` // smoothed RTT (EWMA of round trips); 0 until measured
	// MinRTT is the lowest round trip measured on the link: what it takes
	// when nothing queues, the basis of its cost. 0 if the tunnel does not
	// measure it, and then RTT is used.
	MinRTT   time.Duration `json:"min_rtt,omitempty"`
	BytesIn  uint64        `json:"bytes_in"`
	BytesOut uint64        `json:"bytes_out"`
	Errors   uint64        `json:"errors"`
	Drops    uint64        `json:"drops"`              // messages dropped because a bounded queue was full
	Channels []string      `json:"channels,omitempty"` // channels the peer listens on
}

// Message is the unit a session carries.
type Message struct {
	Header map[string]string
	Body   []byte
}

// Listener yields the sessions peers dial to its channel.
type Listener interface {
	// Accept waits for the next session; as with Session.Recv, ending ctx
	// may close the listener.
	Accept(ctx context.Context) (Session, error)
	Channel() string
	Close() error
}

// Session is a reliable, ordered, two-way stream of messages.
type Session interface {
	ID() string
	Channel() string
	Mode() Mode
	// Peer is the authenticated node id at the other end; "" for an outbound
	// multicast or broadcast session, whose messages reach many peers.
	Peer() string
	Send(ctx context.Context, m *Message) error
	// Recv returns the next message, or io.EOF once the other side closed its
	// sending half. A remote session cannot abandon a single wait, so ending
	// ctx may close the session: pass a ctx that lives as long as it does.
	Recv(ctx context.Context) (*Message, error)
	// CloseSend closes the sending half; the other side's Recv returns io.EOF.
	CloseSend() error
	Close() error
}
