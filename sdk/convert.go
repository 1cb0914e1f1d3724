package sdk

import (
	"time"

	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Conversions between the Go API and its wire form. Zero times travel as
// unset timestamps so that "never expires" survives the round trip.

// TimeToPB converts a time to its wire form; the zero time travels unset.
func TimeToPB(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// TimeFromPB converts a time from its wire form; unset is the zero time.
func TimeFromPB(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

// DurationToPB converts a duration to its wire form; zero travels unset.
func DurationToPB(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// DurationFromPB converts a duration from its wire form; unset is zero.
func DurationFromPB(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

// RouteToPB converts a route to its wire form.
func RouteToPB(r Route) *pb.Route {
	return &pb.Route{
		Service: r.Service, Address: r.Address, Gateway: r.Gateway, Network: r.Network,
		Router: r.Router, Link: r.Link, Metric: r.Metric, Seq: r.Seq, Path: r.Path,
		Expires: TimeToPB(r.Expires), Endpoints: r.Endpoints, Metadata: r.Metadata,
	}
}

// RouteFromPB converts a route from its wire form.
func RouteFromPB(r *pb.Route) Route {
	return Route{
		Service: r.GetService(), Address: r.GetAddress(), Gateway: r.GetGateway(), Network: r.GetNetwork(),
		Router: r.GetRouter(), Link: r.GetLink(), Metric: r.GetMetric(), Seq: r.GetSeq(), Path: r.GetPath(),
		Expires: TimeFromPB(r.GetExpires()), Endpoints: r.GetEndpoints(), Metadata: r.GetMetadata(),
	}
}

func routesToPB(rs []Route) []*pb.Route {
	out := make([]*pb.Route, len(rs))
	for i, r := range rs {
		out[i] = RouteToPB(r)
	}
	return out
}

func routesFromPB(rs []*pb.Route) []Route {
	out := make([]Route, len(rs))
	for i, r := range rs {
		out[i] = RouteFromPB(r)
	}
	return out
}

// EventToPB converts a table event to its wire form.
func EventToPB(e Event) *pb.Event {
	return &pb.Event{
		Type: pb.EventType(e.Type), Timestamp: TimeToPB(e.Timestamp),
		Route: RouteToPB(e.Route), Snapshot: routesToPB(e.Snapshot),
	}
}

// EventFromPB converts a table event from its wire form.
func EventFromPB(e *pb.Event) Event {
	var snapshot []Route
	if len(e.GetSnapshot()) > 0 {
		snapshot = routesFromPB(e.GetSnapshot())
	}
	return Event{
		Type: EventType(e.GetType()), Timestamp: TimeFromPB(e.GetTimestamp()),
		Route: RouteFromPB(e.GetRoute()), Snapshot: snapshot,
	}
}

// AdvertToPB converts an advert to its wire form.
func AdvertToPB(a *Advert) *pb.Advert {
	events := make([]*pb.Event, len(a.Events))
	for i, e := range a.Events {
		events[i] = EventToPB(e)
	}
	return &pb.Advert{
		Id: a.ID, Type: pb.AdvertType(a.Type), Origin: a.Origin,
		Timestamp: TimeToPB(a.Timestamp), Ttl: DurationToPB(a.TTL), Events: events,
	}
}

// AdvertFromPB converts an advert from its wire form.
func AdvertFromPB(a *pb.Advert) *Advert {
	events := make([]Event, len(a.GetEvents()))
	for i, e := range a.GetEvents() {
		events[i] = EventFromPB(e)
	}
	return &Advert{
		ID: a.GetId(), Type: AdvertType(a.GetType()), Origin: a.GetOrigin(),
		Timestamp: TimeFromPB(a.GetTimestamp()), TTL: DurationFromPB(a.GetTtl()), Events: events,
	}
}

// LinkToPB converts a link to its wire form.
func LinkToPB(l Link) *pb.Link {
	return &pb.Link{
		Id: l.ID, Peer: l.Peer, Address: l.Address, Outbound: l.Outbound, State: string(l.State),
		Rtt: durationpb.New(l.RTT), BytesIn: l.BytesIn, BytesOut: l.BytesOut, Errors: l.Errors,
		Drops: l.Drops, Channels: l.Channels, MinRtt: durationpb.New(l.MinRTT),
	}
}

// LinkFromPB converts a link from its wire form.
func LinkFromPB(l *pb.Link) Link {
	return Link{
		ID: l.GetId(), Peer: l.GetPeer(), Address: l.GetAddress(), Outbound: l.GetOutbound(),
		State: LinkState(l.GetState()), RTT: DurationFromPB(l.GetRtt()), BytesIn: l.GetBytesIn(),
		BytesOut: l.GetBytesOut(), Errors: l.GetErrors(), Drops: l.GetDrops(), Channels: l.GetChannels(),
		MinRTT: DurationFromPB(l.GetMinRtt()),
	}
}

// ServiceToPB converts a service to its wire form.
func ServiceToPB(s Service) *pb.Service {
	return &pb.Service{Name: s.Name, Address: s.Address, Endpoints: s.Endpoints, Metadata: s.Metadata}
}

// ServiceFromPB converts a service from its wire form.
func ServiceFromPB(s *pb.Service) Service {
	return Service{Name: s.GetName(), Address: s.GetAddress(), Endpoints: s.GetEndpoints(), Metadata: s.GetMetadata()}
}

func nodeConfigToPB(n NodeConfig) *pb.NodeConfig {
	return &pb.NodeConfig{
		Id: n.ID, Network: n.Network, Listen: n.Listen, Advertise: n.Advertise, Peers: n.Peers,
		DataDir: n.DataDir, Tls: &pb.TLSConfig{Ca: n.TLS.CA, Cert: n.TLS.Cert, Key: n.TLS.Key, Insecure: n.TLS.Insecure},
	}
}

func nodeConfigFromPB(n *pb.NodeConfig) NodeConfig {
	t := n.GetTls()
	return NodeConfig{
		ID: n.GetId(), Network: n.GetNetwork(), Listen: n.GetListen(), Advertise: n.GetAdvertise(),
		Peers: n.GetPeers(), DataDir: n.GetDataDir(),
		TLS: TLSConfig{CA: t.GetCa(), Cert: t.GetCert(), Key: t.GetKey(), Insecure: t.GetInsecure()},
	}
}

func diagnosticsToPB(ds Diagnostics) []*pb.Diagnostic {
	out := make([]*pb.Diagnostic, len(ds))
	for i, d := range ds {
		out[i] = &pb.Diagnostic{
			Severity: pb.Diagnostic_Severity(d.Severity), Summary: d.Summary, Detail: d.Detail, Attribute: d.Attribute,
		}
	}
	return out
}

func diagnosticsFromPB(ds []*pb.Diagnostic) Diagnostics {
	var out Diagnostics
	for _, d := range ds {
		out = append(out, Diagnostic{
			Severity: Severity(d.GetSeverity()), Summary: d.GetSummary(), Detail: d.GetDetail(), Attribute: d.GetAttribute(),
		})
	}
	return out
}

func schemaToPB(s Schema) *pb.SchemaResponse {
	out := &pb.SchemaResponse{}
	for _, a := range s.Attributes {
		out.Attributes = append(out.Attributes, &pb.Attribute{
			Name: a.Name, Type: string(a.Type), Required: a.Required, Description: a.Description, Default: a.Default,
		})
	}
	return out
}

func schemaFromPB(s *pb.SchemaResponse) Schema {
	var out Schema
	for _, a := range s.GetAttributes() {
		out.Attributes = append(out.Attributes, Attribute{
			Name: a.GetName(), Type: Type(a.GetType()), Required: a.GetRequired(), Description: a.GetDescription(), Default: a.GetDefault(),
		})
	}
	return out
}

// QueryToPB converts a route query to its wire form.
func QueryToPB(q Query) *pb.Query {
	return &pb.Query{Service: q.Service, Address: q.Address, Gateway: q.Gateway, Network: q.Network, Router: q.Router, Link: q.Link}
}

// QueryFromPB converts a route query from its wire form.
func QueryFromPB(q *pb.Query) Query {
	return Query{
		Service: q.GetService(), Address: q.GetAddress(), Gateway: q.GetGateway(),
		Network: q.GetNetwork(), Router: q.GetRouter(), Link: q.GetLink(),
	}
}

// DampingToPB converts a route's damping state to its wire form.
func DampingToPB(d DampingState) *pb.DampingState {
	return &pb.DampingState{
		Route: RouteToPB(d.Route), Penalty: d.Penalty, Flaps: int32(d.Flaps),
		Suppressed: d.Suppressed, Since: TimeToPB(d.Since),
	}
}

// DampingFromPB converts a route's damping state from its wire form.
func DampingFromPB(d *pb.DampingState) DampingState {
	return DampingState{
		Route: RouteFromPB(d.GetRoute()), Penalty: d.GetPenalty(), Flaps: int(d.GetFlaps()),
		Suppressed: d.GetSuppressed(), Since: TimeFromPB(d.GetSince()),
	}
}
