package network

import (
	"fmt"
	"time"

	"github.com/microhost/microhost/host/network/networkpb"
	"github.com/microhost/microhost/sdk"
)

// advertToPB encodes an advert for the wire. Gateway, link and expiry are
// left out: the receiver sets them.
func advertToPB(a *sdk.Advert) *networkpb.Advert {
	out := &networkpb.Advert{
		Type:              networkpb.AdvertType_ADVERT_TYPE_ANNOUNCE,
		Origin:            a.Origin,
		TimestampUnixNano: unixNano(a.Timestamp),
		TtlNanos:          int64(a.TTL),
	}
	if a.Type == sdk.Sync {
		out.Type = networkpb.AdvertType_ADVERT_TYPE_SYNC
	}
	for _, e := range a.Events {
		out.Events = append(out.Events, &networkpb.Event{
			Type:              eventTypeToPB(e.Type),
			TimestampUnixNano: unixNano(e.Timestamp),
			Route: &networkpb.Route{
				Service:   e.Route.Service,
				Address:   e.Route.Address,
				Network:   e.Route.Network,
				Router:    e.Route.Router,
				Metric:    e.Route.Metric,
				Seq:       e.Route.Seq,
				Path:      e.Route.Path,
				Endpoints: e.Route.Endpoints,
				Metadata:  e.Route.Metadata,
			},
		})
	}
	return out
}

// advertFromPB decodes a wire advert from sender. Fields an older peer left
// out get defaults: no timestamp means now. An event without a route or
// with an unknown type is an error that names the event.
func advertFromPB(p *networkpb.Advert, sender string, now time.Time) (*sdk.Advert, error) {
	a := &sdk.Advert{
		ID:        sender,
		Type:      sdk.Announce,
		Origin:    p.GetOrigin(),
		Timestamp: timeOr(p.GetTimestampUnixNano(), now),
		TTL:       time.Duration(p.GetTtlNanos()),
	}
	switch p.GetType() {
	case networkpb.AdvertType_ADVERT_TYPE_ANNOUNCE:
	case networkpb.AdvertType_ADVERT_TYPE_SYNC:
		a.Type = sdk.Sync
	default:
		return nil, fmt.Errorf("advert from %q: unknown advert type %d", sender, p.GetType())
	}
	if a.TTL < 0 {
		return nil, fmt.Errorf("advert from %q: negative ttl %v", sender, a.TTL)
	}
	for i, e := range p.GetEvents() {
		typ, err := eventTypeFromPB(e.GetType())
		if err != nil {
			return nil, fmt.Errorf("advert from %q: event %d: %w", sender, i, err)
		}
		r := e.GetRoute()
		if r == nil {
			return nil, fmt.Errorf("advert from %q: event %d has no route", sender, i)
		}
		if r.GetService() == "" {
			return nil, fmt.Errorf("advert from %q: event %d: route has no service", sender, i)
		}
		a.Events = append(a.Events, sdk.Event{
			Type:      typ,
			Timestamp: timeOr(e.GetTimestampUnixNano(), a.Timestamp),
			Route: sdk.Route{
				Service:   r.GetService(),
				Address:   r.GetAddress(),
				Network:   r.GetNetwork(),
				Router:    r.GetRouter(),
				Metric:    r.GetMetric(),
				Seq:       r.GetSeq(),
				Path:      r.GetPath(),
				Endpoints: r.GetEndpoints(),
				Metadata:  r.GetMetadata(),
			},
		})
	}
	return a, nil
}

func eventTypeToPB(t sdk.EventType) networkpb.EventType {
	switch t {
	case sdk.Update:
		return networkpb.EventType_EVENT_TYPE_UPDATE
	case sdk.Delete:
		return networkpb.EventType_EVENT_TYPE_DELETE
	}
	return networkpb.EventType_EVENT_TYPE_CREATE
}

func eventTypeFromPB(t networkpb.EventType) (sdk.EventType, error) {
	switch t {
	case networkpb.EventType_EVENT_TYPE_CREATE:
		return sdk.Create, nil
	case networkpb.EventType_EVENT_TYPE_UPDATE:
		return sdk.Update, nil
	case networkpb.EventType_EVENT_TYPE_DELETE:
		return sdk.Delete, nil
	}
	return 0, fmt.Errorf("unknown event type %d", t)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func timeOr(ns int64, def time.Time) time.Time {
	if ns == 0 {
		return def
	}
	return time.Unix(0, ns)
}
