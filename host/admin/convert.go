package admin

import (
	"time"

	"github.com/microhost/microhost/host/admin/adminpb"
	"github.com/microhost/microhost/host/registry"
	"github.com/microhost/microhost/sdk"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Conversions between the Go types and the wire. Zero times and durations
// travel unset, so that "never" survives the round trip.

func timeToPB(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func timeFromPB(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

func durationToPB(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func durationFromPB(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

func convertAll[T, U any](in []T, f func(T) U) []U {
	out := make([]U, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

func nodeInfoToPB(n NodeInfo) *adminpb.NodeInfo {
	return &adminpb.NodeInfo{Id: n.ID, Address: n.Address, Hops: int32(n.Hops), Metric: n.Metric, Via: n.Via}
}

func nodeInfoFromPB(n *adminpb.NodeInfo) NodeInfo {
	return NodeInfo{ID: n.GetId(), Address: n.GetAddress(), Hops: int(n.GetHops()), Metric: n.GetMetric(), Via: n.GetVia()}
}

func edgeToPB(e Edge) *adminpb.Edge {
	return &adminpb.Edge{From: e.From, To: e.To, Metric: e.Metric}
}

func edgeFromPB(e *adminpb.Edge) Edge {
	return Edge{From: e.GetFrom(), To: e.GetTo(), Metric: e.GetMetric()}
}

func serviceInfoToPB(s ServiceInfo) *adminpb.ServiceInfo {
	return &adminpb.ServiceInfo{
		Service: sdk.ServiceToPB(s.Service), Source: string(s.Source), Ttl: durationToPB(s.TTL),
		Expires: timeToPB(s.Expires), Health: string(s.Health), LastError: s.LastError,
	}
}

func serviceInfoFromPB(s *adminpb.ServiceInfo) ServiceInfo {
	return ServiceInfo{
		Service: sdk.ServiceFromPB(s.GetService()), Source: registry.Source(s.GetSource()),
		TTL: durationFromPB(s.GetTtl()), Expires: timeFromPB(s.GetExpires()),
		Health: registry.Health(s.GetHealth()), LastError: s.GetLastError(),
	}
}

func pluginToPB(p PluginStatus) *adminpb.PluginStatus {
	return &adminpb.PluginStatus{
		Name: p.Name, Kind: string(p.Kind), Type: p.Type, Pid: int64(p.PID), Address: p.Address,
		State: p.State, Restarts: int32(p.Restarts), LastError: p.LastError, Since: timeToPB(p.Since),
	}
}

func pluginFromPB(p *adminpb.PluginStatus) PluginStatus {
	return PluginStatus{
		Name: p.GetName(), Kind: sdk.Kind(p.GetKind()), Type: p.GetType(), PID: int(p.GetPid()),
		Address: p.GetAddress(), State: p.GetState(), Restarts: int(p.GetRestarts()),
		LastError: p.GetLastError(), Since: timeFromPB(p.GetSince()),
	}
}
