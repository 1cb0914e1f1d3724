package proxyrpc

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/microhost/microhost/plugins/proxy-rpc/pubsub"
	"github.com/microhost/microhost/plugins/proxy-rpc/pubsubpb"
	"github.com/microhost/microhost/sdk"
)

// PubSubChannel is the tunnel channel published messages travel on.
const PubSubChannel = "pubsub"

// Tunnel message headers of a published message; metadata entries are
// sent as metaPrefix+key.
const (
	headerID     = "id"
	headerTopic  = "topic"
	headerOrigin = "origin"
	headerHops   = "hops"
	metaPrefix   = "meta."
)

// pubsubService serves microhost.proxy.v1.PubSub on the client-facing server.
type pubsubService struct {
	pubsubpb.UnimplementedPubSubServer
	broker *pubsub.Broker
}

func (s *pubsubService) Publish(_ context.Context, req *pubsubpb.PublishRequest) (*pubsubpb.PublishResponse, error) {
	if req.GetTopic() == "" {
		return nil, status.Error(codes.InvalidArgument, "publish: topic is empty")
	}
	id, err := s.broker.Publish(pubsub.Message{Topic: req.GetTopic(), Payload: req.GetPayload(), Metadata: req.GetMetadata()})
	if err != nil {
		// Local subscribers have it; say that other nodes may not.
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	return &pubsubpb.PublishResponse{Id: id}, nil
}

func (s *pubsubService) Subscribe(req *pubsubpb.SubscribeRequest, stream grpc.ServerStreamingServer[pubsubpb.Event]) error {
	sub, err := s.broker.Subscribe(req.GetTopic())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	defer sub.Close()
	// Headers tell the client the subscription is in place.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	for {
		m, err := sub.Next(stream.Context())
		switch {
		case errors.Is(err, pubsub.ErrSlow):
			return status.Error(codes.ResourceExhausted, err.Error())
		case err != nil:
			return status.FromContextError(err).Err()
		}
		ev := &pubsubpb.Event{Id: m.ID, Topic: m.Topic, Payload: m.Payload, Metadata: m.Metadata, Origin: m.Origin}
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
}

// multicaster sends published messages to the peers over one multicast
// session, dialled when first needed and again after it fails.
type multicaster struct {
	tunnel func(context.Context) (sdk.Tunnel, error)
	ctx    context.Context

	mu   sync.Mutex
	sess sdk.Session
}

func (m *multicaster) send(msg pubsub.Message) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sess == nil {
		tun, err := m.tunnel(m.ctx)
		if err != nil {
			return err
		}
		sess, err := tun.Dial(m.ctx, PubSubChannel, sdk.DialOptions{Mode: sdk.Multicast})
		if err != nil {
			return err
		}
		m.sess = sess
	}
	if err := m.sess.Send(m.ctx, encode(msg)); err != nil {
		m.sess.Close()
		m.sess = nil
		return err
	}
	return nil
}

func (m *multicaster) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sess != nil {
		m.sess.Close()
		m.sess = nil
	}
}

func encode(m pubsub.Message) *sdk.Message {
	h := map[string]string{headerID: m.ID, headerTopic: m.Topic, headerOrigin: m.Origin, headerHops: strconv.Itoa(m.Hops)}
	for k, v := range m.Metadata {
		h[metaPrefix+k] = v
	}
	return &sdk.Message{Header: h, Body: m.Payload}
}

func decode(msg *sdk.Message) (pubsub.Message, error) {
	h := msg.Header
	hops, err := strconv.Atoi(h[headerHops])
	if err != nil || hops < 0 {
		return pubsub.Message{}, errors.New("published message with a bad hops header " + strconv.Quote(h[headerHops]))
	}
	m := pubsub.Message{ID: h[headerID], Topic: h[headerTopic], Origin: h[headerOrigin], Hops: hops, Payload: msg.Body}
	for k, v := range h {
		if key, ok := strings.CutPrefix(k, metaPrefix); ok {
			if m.Metadata == nil {
				m.Metadata = map[string]string{}
			}
			m.Metadata[key] = v
		}
	}
	return m, nil
}
