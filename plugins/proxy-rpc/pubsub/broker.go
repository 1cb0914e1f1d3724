// Package pubsub is the proxy's publish/subscribe core: local fan-out to
// subscribers with bounded queues, and flooding between nodes, where every
// node relays a message it has not seen before to its own peers, so that
// a message reaches every node of the network even without a direct link.
package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
)

// Message is one published message.
type Message struct {
	ID       string
	Topic    string
	Origin   string // node id of the publisher's node
	Hops     int    // links travelled so far
	Payload  []byte
	Metadata map[string]string
}

// SendFunc sends a message to this node's peers.
type SendFunc func(Message) error

// Defaults.
const (
	DefaultQueueSize = 1024 // messages a subscriber may fall behind by
	DefaultSeen      = 8192 // message ids remembered to drop duplicates
)

// ErrSlow ends a subscription whose queue overflowed.
var ErrSlow = errors.New("subscriber fell behind")

// Broker delivers messages to local subscribers and relays them to peers.
type Broker struct {
	node      string
	send      SendFunc
	maxHops   int
	queueSize int

	mu   sync.Mutex
	subs map[string]map[*Subscription]struct{}
	seen *seenSet
}

// NewBroker returns a broker for node that relays with send up to maxHops
// links from the publisher.
func NewBroker(node string, send SendFunc, maxHops int) *Broker {
	return &Broker{node: node, send: send, maxHops: maxHops, queueSize: DefaultQueueSize,
		subs: map[string]map[*Subscription]struct{}{}, seen: newSeenSet(DefaultSeen)}
}

// Publish delivers m to local subscribers and sends it to the peers. It
// fills in the id and origin and returns the id.
func (b *Broker) Publish(m Message) (string, error) {
	if m.Topic == "" {
		return "", errors.New("publish: topic is empty")
	}
	m.ID = newID()
	m.Origin = b.node
	m.Hops = 0
	b.mu.Lock()
	b.seen.add(m.ID)
	b.deliverLocked(m)
	b.mu.Unlock()
	if err := b.send(m); err != nil {
		return m.ID, fmt.Errorf("publish %s to other nodes: %w", m.ID, err)
	}
	return m.ID, nil
}

// Receive handles a message from a peer: the first copy is delivered and
// relayed onwards, later copies are dropped. It reports whether m was new.
func (b *Broker) Receive(m Message) (bool, error) {
	if m.ID == "" || m.Topic == "" {
		return false, fmt.Errorf("message from the network without id or topic (id %q, topic %q)", m.ID, m.Topic)
	}
	b.mu.Lock()
	if b.seen.has(m.ID) {
		b.mu.Unlock()
		return false, nil
	}
	b.seen.add(m.ID)
	b.deliverLocked(m)
	b.mu.Unlock()
	m.Hops++
	if m.Hops >= b.maxHops {
		return true, nil
	}
	if err := b.send(m); err != nil {
		return true, fmt.Errorf("relay %s: %w", m.ID, err)
	}
	return true, nil
}

func (b *Broker) deliverLocked(m Message) {
	for s := range b.subs[m.Topic] {
		s.offer(m)
	}
}

// Subscribe returns a subscription to topic; Close it when done.
func (b *Broker) Subscribe(topic string) (*Subscription, error) {
	if topic == "" {
		return nil, errors.New("subscribe: topic is empty")
	}
	s := &Subscription{b: b, topic: topic, limit: b.queueSize, wake: make(chan struct{}, 1)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs[topic] == nil {
		b.subs[topic] = map[*Subscription]struct{}{}
	}
	b.subs[topic][s] = struct{}{}
	return s, nil
}

// Subscription is one subscriber's queue.
type Subscription struct {
	b     *Broker
	topic string
	limit int
	wake  chan struct{}

	mu      sync.Mutex
	queue   []Message
	dropped int // messages lost after the queue overflowed
}

// offer queues m; on overflow the subscription is marked slow instead of
// blocking the publisher or dropping silently.
func (s *Subscription) offer(m Message) {
	s.mu.Lock()
	if s.dropped > 0 || len(s.queue) >= s.limit {
		s.dropped++
	} else {
		s.queue = append(s.queue, m)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Next returns the next message. It fails with ErrSlow once the
// subscriber has fallen too far behind, after the queued messages.
func (s *Subscription) Next(ctx context.Context) (Message, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			m := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return m, nil
		}
		dropped := s.dropped
		s.mu.Unlock()
		if dropped > 0 {
			return Message{}, fmt.Errorf("%w on topic %q: %d messages dropped", ErrSlow, s.topic, dropped)
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return Message{}, ctx.Err()
		}
	}
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	delete(s.b.subs[s.topic], s)
	if len(s.b.subs[s.topic]) == 0 {
		delete(s.b.subs, s.topic)
	}
}

// seenSet remembers the most recent ids, forgetting the oldest first.
type seenSet struct {
	ids  map[string]struct{}
	ring []string
	next int
}

func newSeenSet(n int) *seenSet {
	return &seenSet{ids: make(map[string]struct{}, n), ring: make([]string, n)}
}

func (s *seenSet) has(id string) bool {
	_, ok := s.ids[id]
	return ok
}

func (s *seenSet) add(id string) {
	if old := s.ring[s.next]; old != "" {
		delete(s.ids, old)
	}
	s.ring[s.next] = id
	s.ids[id] = struct{}{}
	s.next = (s.next + 1) % len(s.ring)
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
